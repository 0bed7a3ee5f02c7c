// The page script of the real-browser test of first-party cookie sessions
// (tests/tests/e2e/edge.rs). Plain fetch calls, kept in this one file so it
// can be swapped for the browser client (clients/js) without touching the
// test: `window.IDM = {api, key, email, password}` is set by the page, the
// step comes from `location.hash`, and the outcome goes to
// `window.__idmResult` with `window.__idmDone = true`.
(function () {
  const { api, key, email, password } = window.IDM;
  const headers = {
    "Idm-Api-Key": key,
    "Idm-Session-Mode": "cookie",
    "Content-Type": "application/json",
  };
  const call = async (method, path, body) => {
    try {
      const response = await fetch(api + path, {
        method,
        headers,
        credentials: "include",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      let json = null;
      try {
        json = await response.json();
      } catch (_) {}
      return {
        status: response.status,
        code: json && json.error ? json.error.code : null,
        body: json,
      };
    } catch (e) {
      // The browser refused to hand the answer to the page (CORS).
      return { status: 0, refused: String(e) };
    }
  };
  const steps = {
    // Sign up, read /me with the cookie alone, refresh, read /me again.
    async signup() {
      const up = await call("POST", "/v1/client/sign_up", { email, password });
      const me = await call("GET", "/v1/client/me");
      const refreshed = await call("POST", "/v1/client/token/refresh", {});
      const again = await call("GET", "/v1/client/me");
      return {
        sign_up: up.status,
        tokens_in_body: !!(up.body && (up.body.session_token || up.body.refresh_token)),
        user_id: up.body && up.body.user ? up.body.user.id : null,
        me: me.status,
        me_id: me.body ? me.body.id : null,
        refresh: refreshed.status,
        refresh_tokens_in_body: !!(refreshed.body && refreshed.body.refresh_token),
        me_after_refresh: again.status,
        // HttpOnly: the page's script cannot see the session.
        document_cookie: document.cookie,
      };
    },
    // A page of another site: the SameSite=Lax cookie does not travel.
    async cross() {
      const me = await call("GET", "/v1/client/me");
      return { me: me.status, code: me.code, refused: me.refused || null };
    },
    // A page on an origin the issuer does not list: the browser blocks it.
    async evil() {
      const me = await call("GET", "/v1/client/me");
      return { me: me.status, refused: me.refused || null };
    },
    async signout() {
      const out = await call("POST", "/v1/client/sign_out");
      const me = await call("GET", "/v1/client/me");
      return { sign_out: out.status, me: me.status, code: me.code };
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
})();
