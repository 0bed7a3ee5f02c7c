// The built client (dist/idmesh.js) against a running platform, in header
// mode, from Node: run by tests/tests/e2e/js_client.rs, which starts the
// platform, passes its address and a tenant's restricted key, and checks
// this script's report against the platform's own state. Cookie mode needs a
// browser's cookie jar: the headless Chromium test in tests/tests/e2e/edge.rs.
//
//   IDM_EDGE_URL, IDM_RESTRICTED_KEY, IDM_ORIGIN, IDM_EMAIL, IDM_PASSWORD
import { IdmeshClient, IdmeshError } from "../dist/idmesh.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const origin = env("IDM_ORIGIN");
// Node's fetch sends no Origin; a browser always does on these calls.
const fetchFromPage = (url, init = {}) => fetch(url, { ...init, headers: { ...init.headers, Origin: origin } });
const changes = [];
const client = new IdmeshClient({
  baseUrl: env("IDM_EDGE_URL"),
  restrictedKey: env("IDM_RESTRICTED_KEY"),
  mode: "header",
  fetch: fetchFromPage,
  onSessionChange: (s) => changes.push(s ? s.sessionId : null),
});
const email = env("IDM_EMAIL");
const password = env("IDM_PASSWORD");
const report = {};
const codeOf = (promise) =>
  promise.then(
    () => "ok",
    (e) => (e instanceof IdmeshError ? e.code : `not an IdmeshError: ${e}`),
  );

const signedUp = await client.signUp({ email, password, name: "Node Client" });
report.signed_up_session = signedUp.sessionId;
report.me_id = (await client.me()).id;
report.user_id = signedUp.user?.id;
// Three callers at once share one rotation: a second rotation of the same
// refresh token would be a reuse and revoke the session, so /me after it
// answering is the proof.
const refreshed = await Promise.all([client.refresh(), client.refresh(), client.refresh()]);
report.concurrent_refresh_sessions = [...new Set(refreshed.map((s) => s.sessionId))];
report.me_after_refresh = (await client.me()).id;
report.wrong_password = await codeOf(
  new IdmeshClient({ baseUrl: env("IDM_EDGE_URL"), restrictedKey: env("IDM_RESTRICTED_KEY"), mode: "header", fetch: fetchFromPage })
    .signIn({ email, password: `${password}!` }),
);
report.last_session_token = await client.getSessionToken();
await client.signOut();
report.signed_out_session = client.session;
report.me_after_sign_out = await codeOf(client.me());
report.session_changes = changes;
console.log(JSON.stringify(report));
