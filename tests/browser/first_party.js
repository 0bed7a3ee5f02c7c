// The page script of the real-browser test of first-party cookie sessions
// (tests/tests/e2e/edge.rs), through the browser client (clients/js, served
// by the test as /idmesh.js from clients/js/dist). `window.IDM = {api, key,
// email, password}` is set by the page, the step comes from `?step=`, and the
// outcome goes to `window.__idmResult` with `window.__idmDone = true`.
import { IdmeshClient, IdmeshError } from "/idmesh.js";

const { api, key, email, password } = window.IDM;
// Every answer body the client received, to show that cookie mode keeps the
// tokens out of the page (the client itself never exposes them).
const bodies = [];
const watchingFetch = async (input, init) => {
  const response = await window.fetch(input, init);
  try {
    bodies.push(await response.clone().json());
  } catch (_) {}
  return response;
};
const client = new IdmeshClient({ baseUrl: api, restrictedKey: key, mode: "cookie", fetch: watchingFetch });
const tokensSeen = () => bodies.some((b) => b && (b.session_token || b.refresh_token));
// The status of a call: 200 when it worked, the error's status otherwise
// (0 when the browser refused the page the answer: CORS).
const outcome = async (promise) => {
  try {
    const value = await promise;
    return { status: 200, code: null, value };
  } catch (e) {
    if (e instanceof IdmeshError) {
      return { status: e.status, code: e.code, refused: e.status === 0 ? e.message : null };
    }
    return { status: -1, code: String(e) };
  }
};

const steps = {
  // Sign up, read /me with the cookie alone, refresh, read /me again.
  async signup() {
    const up = await outcome(client.signUp({ email, password }));
    const me = await outcome(client.me());
    const refreshed = await outcome(client.refresh());
    const again = await outcome(client.me());
    return {
      sign_up: up.status === 200 ? 201 : up.status,
      sign_up_code: up.code,
      tokens_in_body: tokensSeen(),
      user_id: up.value && up.value.user ? up.value.user.id : null,
      me: me.status,
      me_id: me.value ? me.value.id : null,
      refresh: refreshed.status,
      refresh_tokens_in_body: tokensSeen(),
      me_after_refresh: again.status,
      // HttpOnly: the page's script cannot see the session.
      document_cookie: document.cookie,
    };
  },
  // A page of another site: the SameSite=Lax cookie does not travel.
  async cross() {
    const me = await outcome(client.me());
    return { me: me.status, code: me.code, refused: me.refused || null };
  },
  // A page on an origin the issuer does not list: the browser blocks it.
  async evil() {
    const me = await outcome(client.me());
    return { me: me.status, refused: me.refused || null };
  },
  async signout() {
    const out = await outcome(client.signOut());
    const me = await outcome(client.me());
    return { sign_out: out.status, me: me.status, code: me.code, session_left: client.session };
  },
};

const name = new URLSearchParams(location.search).get("step");
const step = steps[name];
(step ? step() : Promise.resolve({ error: "unknown step" }))
  .then((result) => {
    window.__idmResult = result;
  })
  .catch((e) => {
    window.__idmResult = { error: String(e) };
  })
  .finally(() => {
    console.log("idm step " + name + ": " + JSON.stringify(window.__idmResult));
    window.__idmDone = true;
  });
