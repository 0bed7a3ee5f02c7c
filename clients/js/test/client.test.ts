// The client's own logic (which headers go out, when it refreshes, how it
// reads errors) against a scripted edge. The same client against the real
// platform: tests/tests/e2e/js_client.rs (Node, header mode) and the headless
// Chromium test in tests/tests/e2e/edge.rs (cookie mode).
import { describe, expect, it } from "vitest";
import { IdmeshClient, IdmeshError, type Session } from "../src/idmesh";

interface Seen {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: unknown;
  credentials?: RequestCredentials;
}

type Handler = (request: Seen) => Response | Promise<Response>;

/** A scripted edge: each request goes to the next handler in order. */
function edge(...handlers: Handler[]) {
  const seen: Seen[] = [];
  const fetchImpl = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request: Seen = {
      url: String(input),
      method: init?.method ?? "GET",
      headers: Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>)),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
      credentials: init?.credentials,
    };
    seen.push(request);
    const handler = handlers.shift();
    if (!handler) {
      throw new Error(`unexpected request ${request.method} ${request.url}`);
    }
    return handler(request);
  };
  return { seen, fetch: fetchImpl as typeof fetch };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function fail(status: number, code: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  return json(status, { error: { code, message: code, request_id: "req_1", ...extra } }, headers);
}

const PK = "rk_test_abc";
const BASE = "https://acme.auth.example.test";
const USER = { id: "usr_1", email: "ada@example.com" };

function session(expiresInMs: number, now: number, tokens?: { session: string; refresh: string }) {
  return {
    user: USER,
    session_id: "ses_1",
    expires_at: new Date(now + expiresInMs).toISOString(),
    ...(tokens ? { session_token: tokens.session, refresh_token: tokens.refresh } : {}),
  };
}

describe("construction", () => {
  it("refuses a secret key, which must never reach a page", () => {
    expect(() => new IdmeshClient({ baseUrl: BASE, restrictedKey: "ath_sec_live_x" })).toThrow(/restricted key/);
  });

  it("refuses a base URL that is not http(s)", () => {
    expect(() => new IdmeshClient({ baseUrl: "javascript:alert(1)", restrictedKey: PK })).toThrow(/http/);
    expect(() => new IdmeshClient({ baseUrl: "not a url", restrictedKey: PK })).toThrow(/URL/);
  });
});

describe("cookie mode", () => {
  it("asks for cookies, sends credentials and the key, and holds no token", async () => {
    const now = Date.now();
    const { seen, fetch } = edge(
      () => json(201, session(600_000, now)),
      () => json(200, USER),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    const signedUp = await client.signUp({ email: USER.email, password: "correct horse battery" });
    expect(signedUp.sessionId).toBe("ses_1");
    expect(await client.me()).toEqual(USER);
    expect(seen[0]).toMatchObject({
      url: `${BASE}/v1/client/sign_up`,
      method: "POST",
      credentials: "include",
      headers: { "Idm-Api-Key": PK, "Idm-Session-Mode": "cookie", "Content-Type": "application/json" },
    });
    // /me rides on the cookie alone: no bearer token, no mode header.
    expect(seen[1]?.headers.Authorization).toBeUndefined();
    expect(seen[1]?.headers["Idm-Session-Mode"]).toBeUndefined();
    expect(seen[1]?.headers["Idm-Api-Key"]).toBe(PK);
    expect(seen[1]?.credentials).toBe("include");
    expect(await client.getSessionToken()).toBeNull();
  });

  it("refreshes with an empty body: the refresh token is in an HttpOnly cookie", async () => {
    const now = Date.now();
    const { seen, fetch } = edge(
      () => json(200, session(600_000, now)),
      () => json(200, { session_id: "ses_1", expires_at: new Date(now + 900_000).toISOString() }),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    await client.signIn({ email: USER.email, password: "pw" });
    const refreshed = await client.refresh();
    expect(seen[1]?.body).toEqual({});
    expect(seen[1]?.headers["Idm-Session-Mode"]).toBe("cookie");
    expect(refreshed.expiresAt.getTime()).toBe(now + 900_000);
    // The user learnt at sign-in is kept across a refresh that omits it.
    expect(client.session?.user).toEqual(USER);
  });
});

describe("header mode", () => {
  it("keeps tokens in memory and sends the session as a bearer token", async () => {
    const now = Date.now();
    const { seen, fetch } = edge(
      () => json(200, session(600_000, now, { session: "st_1", refresh: "rt_1" })),
      () => json(200, USER),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, mode: "header", fetch });
    await client.signIn({ email: USER.email, password: "pw" });
    await client.me();
    expect(seen[0]?.credentials).toBe("omit");
    expect(seen[0]?.headers["Idm-Session-Mode"]).toBeUndefined();
    expect(seen[1]?.headers.Authorization).toBe("Bearer st_1");
    expect(await client.getSessionToken()).toBe("st_1");
  });

  it("refuses an answer without tokens instead of pretending to be signed in", async () => {
    const now = Date.now();
    const { fetch } = edge(() => json(200, session(600_000, now)));
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, mode: "header", fetch });
    await expect(client.signIn({ email: USER.email, password: "pw" })).rejects.toMatchObject({ code: "invalid_response" });
    expect(client.session).toBeNull();
  });

  it("shares one rotation between concurrent callers (two would be a reuse)", async () => {
    const now = Date.now();
    let rotations = 0;
    const { seen, fetch } = edge(
      () => json(200, session(600_000, now, { session: "st_1", refresh: "rt_1" })),
      async () => {
        rotations += 1;
        await new Promise((resolve) => setTimeout(resolve, 20));
        return json(200, session(600_000, now, { session: "st_2", refresh: "rt_2" }));
      },
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, mode: "header", fetch });
    await client.signIn({ email: USER.email, password: "pw" });
    const [a, b, c] = await Promise.all([client.refresh(), client.refresh(), client.refresh()]);
    expect(rotations).toBe(1);
    expect(a).toBe(b);
    expect(b).toBe(c);
    expect(seen[1]?.body).toEqual({ refresh_token: "rt_1" });
    expect(await client.getSessionToken()).toBe("st_2");
  });

  it("refreshes before a call when the token is inside the leeway", async () => {
    let now = 1_000_000;
    const { seen, fetch } = edge(
      () => json(200, session(60_000, now, { session: "st_1", refresh: "rt_1" })),
      () => json(200, session(600_000, now, { session: "st_2", refresh: "rt_2" })),
      () => json(200, USER),
    );
    const client = new IdmeshClient({
      baseUrl: BASE,
      restrictedKey: PK,
      mode: "header",
      fetch,
      refreshLeewaySeconds: 30,
      now: () => now,
    });
    await client.signIn({ email: USER.email, password: "pw" });
    now += 45_000; // 15 s left, inside the 30 s leeway
    await client.me();
    expect(seen.map((r) => r.url.replace(BASE, ""))).toEqual([
      "/v1/client/sign_in",
      "/v1/client/token/refresh",
      "/v1/client/me",
    ]);
    expect(seen[2]?.headers.Authorization).toBe("Bearer st_2");
  });

  it("retries once after one refresh when the token died in flight, never more", async () => {
    const now = Date.now();
    const { seen, fetch } = edge(
      () => json(200, session(600_000, now, { session: "st_1", refresh: "rt_1" })),
      () => fail(401, "session_invalid"),
      () => json(200, session(600_000, now, { session: "st_2", refresh: "rt_2" })),
      () => fail(401, "session_invalid"),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, mode: "header", fetch });
    await client.signIn({ email: USER.email, password: "pw" });
    await expect(client.me()).rejects.toMatchObject({ code: "session_invalid", status: 401 });
    expect(seen).toHaveLength(4);
    expect(seen[3]?.headers.Authorization).toBe("Bearer st_2");
  });

  it("forgets the session when the refresh token was reused", async () => {
    const now = Date.now();
    const changes: (Session | null)[] = [];
    const { fetch } = edge(
      () => json(200, session(600_000, now, { session: "st_1", refresh: "rt_1" })),
      () => fail(401, "refresh_token_reused"),
    );
    const client = new IdmeshClient({
      baseUrl: BASE,
      restrictedKey: PK,
      mode: "header",
      fetch,
      onSessionChange: (s) => changes.push(s),
    });
    await client.signIn({ email: USER.email, password: "pw" });
    await expect(client.refresh()).rejects.toMatchObject({ code: "refresh_token_reused" });
    expect(client.session).toBeNull();
    expect(await client.getSessionToken()).toBeNull();
    expect(changes.map((c) => c?.sessionId ?? null)).toEqual(["ses_1", null]);
  });
});

describe("errors", () => {
  it("carry the stable code, request id and Retry-After", async () => {
    const { fetch } = edge(() => fail(429, "rate_limited", {}, { "Retry-After": "7" }));
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    const error = await client.sendEmailCode("ada@example.com").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdmeshError);
    expect(error).toMatchObject({ status: 429, code: "rate_limited", requestId: "req_1", retryAfter: 7 });
  });

  it("turn mfa_required into a step of the sign-in, with its token", async () => {
    const { seen, fetch } = edge(
      () => fail(401, "mfa_required", { mfa_token: "mfa_1" }),
      () => json(200, session(600_000, Date.now())),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    const first = await client.signIn({ email: USER.email, password: "pw" });
    expect(first).toEqual({ status: "mfa_required", mfaToken: "mfa_1" });
    expect(client.session).toBeNull();
    await client.verifyMfa({ mfaToken: "mfa_1", code: "123456" });
    expect(seen[1]?.body).toEqual({ mfa_token: "mfa_1", code: "123456" });
    expect(client.session?.sessionId).toBe("ses_1");
  });

  it("name a network failure and an answer that is not the edge's", async () => {
    const down = new IdmeshClient({
      baseUrl: BASE,
      restrictedKey: PK,
      fetch: (async () => {
        throw new TypeError("Failed to fetch");
      }) as typeof fetch,
    });
    await expect(down.me()).rejects.toMatchObject({ code: "network_error", status: 0 });
    const { fetch } = edge(() => new Response("<html>bad gateway</html>", { status: 502 }));
    const proxy = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    await expect(proxy.me()).rejects.toMatchObject({ code: "upstream_unavailable", status: 502 });
  });

  it("sign-out forgets the session even when the edge already ended it", async () => {
    const now = Date.now();
    const { fetch } = edge(
      () => json(200, session(600_000, now)),
      () => fail(401, "session_revoked"),
    );
    const client = new IdmeshClient({ baseUrl: BASE, restrictedKey: PK, fetch });
    await client.signIn({ email: USER.email, password: "pw" });
    await client.signOut();
    expect(client.session).toBeNull();
  });
});

describe("magic links", () => {
  it("read the code the link brought", () => {
    expect(IdmeshClient.magicLinkCode("https://app.example.com/cb?idm_magic_code=abc&x=1")).toBe("abc");
    expect(IdmeshClient.magicLinkCode("https://app.example.com/cb")).toBeNull();
  });
});
