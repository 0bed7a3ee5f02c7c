/**
 * idmesh browser client: sign-up, sign-in, magic links, email codes, TOTP,
 * refresh and sign-out against an idmesh edge, in one of two session modes.
 *
 * - `cookie` (the default): the edge keeps the session token and the refresh
 *   token in `HttpOnly` cookies on the issuer's own host, so no script on the
 *   page can read them. Needs the issuer's host (a platform subdomain or the
 *   tenant's verified custom domain) as `baseUrl`; see docs/EDGE.md.
 * - `header`: the tokens come back in the JSON body and this client keeps them
 *   in memory only, sending `Authorization: Bearer`. Works against any edge
 *   address, at the cost of tokens that page scripts could read.
 *
 * The wire contract is docs/openapi.json; error codes are docs/ERRORS.md.
 */

export type SessionMode = "cookie" | "header";

export interface IdmeshOptions {
  /** The edge's origin, e.g. `https://acme.auth.example.com`. */
  baseUrl: string;
  /** The issuer's restricted, browser-safe key (`rk_live_…` / `rk_test_…`). */
  restrictedKey: string;
  /** `cookie` (default) or `header`. */
  mode?: SessionMode;
  /**
   * Refresh this many seconds before the session token expires (default 30),
   * so a call never leaves with a token that dies on the way.
   */
  refreshLeewaySeconds?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Told whenever the client signs in, refreshes or loses its session. */
  onSessionChange?: (session: Session | null) => void;
  /** Clock, in milliseconds since the epoch (tests). */
  now?: () => number;
}

export interface User {
  id: string;
  email: string;
  email_verified?: boolean;
  name?: string | null;
  region?: string;
  mfa_enabled?: boolean;
  created_at?: string;
  [field: string]: unknown;
}

/** What the client knows about the current session; never a token. */
export interface Session {
  sessionId: string;
  expiresAt: Date;
  user?: User;
}

export type SignInResult =
  | { status: "signed_in"; session: Session }
  | { status: "mfa_required"; mfaToken: string };

export interface TotpEnrollment {
  secret: string;
  otpauthUrl: string;
}

/** A fresh proof for operations that need one (`step_up_required`). */
export interface StepUp {
  currentPassword?: string;
  totpCode?: string;
  backupCode?: string;
  emailCode?: string;
}

/** Every failure: `code` is the stable code of docs/ERRORS.md. */
export class IdmeshError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId?: string;
  /** Seconds, from `Retry-After`, when the edge said how long to wait. */
  readonly retryAfter?: number;
  /** Set with `mfa_required`: pass it to `verifyMfa`. */
  readonly mfaToken?: string;
  readonly details?: Record<string, unknown>;

  constructor(init: {
    status: number;
    code: string;
    message: string;
    requestId?: string;
    retryAfter?: number;
    mfaToken?: string;
    details?: Record<string, unknown>;
  }) {
    super(init.message);
    this.name = "IdmeshError";
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.retryAfter = init.retryAfter;
    this.mfaToken = init.mfaToken;
    this.details = init.details;
  }
}

/** Codes after which the session is gone and only a new sign-in helps. */
const SESSION_ENDED = new Set([
  "session_invalid",
  "session_revoked",
  "session_compromised",
  "refresh_token_reused",
]);

interface Tokens {
  session: string;
  refresh: string;
}

interface RawSession {
  session_id: string;
  expires_at: string;
  session_token?: string;
  refresh_token?: string;
  user?: User;
}

interface Call {
  method: "GET" | "POST" | "DELETE";
  path: string;
  body?: unknown;
  /** Sends the session (cookie or bearer token). */
  session?: boolean;
  /** Marks a call whose answer starts or renews a session. */
  issuesSession?: boolean;
}

export class IdmeshClient {
  readonly mode: SessionMode;
  readonly #baseUrl: string;
  readonly #restrictedKey: string;
  readonly #leewayMs: number;
  readonly #fetch: typeof fetch;
  readonly #onSessionChange?: (session: Session | null) => void;
  readonly #now: () => number;
  #session: Session | null = null;
  #tokens: Tokens | null = null;
  #refreshing: Promise<Session> | null = null;

  constructor(options: IdmeshOptions) {
    let base: URL;
    try {
      base = new URL(options.baseUrl);
    } catch {
      throw new TypeError(`baseUrl is not a URL: ${options.baseUrl}`);
    }
    if (base.protocol !== "https:" && base.protocol !== "http:") {
      throw new TypeError("baseUrl must be an http(s) URL");
    }
    if (!/^rk_(live|test)_/.test(options.restrictedKey)) {
      // A secret key in a page would hand every visitor the backend API.
      throw new TypeError("restrictedKey must be a restricted key (rk_live_… or rk_test_…), never a secret key");
    }
    this.mode = options.mode ?? "cookie";
    this.#baseUrl = base.origin;
    this.#restrictedKey = options.restrictedKey;
    this.#leewayMs = Math.max(0, options.refreshLeewaySeconds ?? 30) * 1000;
    const chosenFetch = options.fetch ?? globalThis.fetch;
    // Bound, or browsers throw "Illegal invocation" for an unbound window.fetch.
    this.#fetch = chosenFetch.bind(globalThis);
    this.#onSessionChange = options.onSessionChange;
    this.#now = options.now ?? Date.now;
  }

  /** The current session as far as this client knows, or null. */
  get session(): Session | null {
    return this.#session;
  }

  async signUp(input: { email: string; password: string; name?: string }): Promise<Session> {
    const raw = await this.#call<RawSession>({
      method: "POST",
      path: "/v1/client/sign_up",
      body: input,
      issuesSession: true,
    });
    return this.#adopt(raw);
  }

  /** Password sign-in; a user with MFA answers `mfa_required` with a token for `verifyMfa`. */
  async signIn(input: { email: string; password: string }): Promise<SignInResult> {
    try {
      const raw = await this.#call<RawSession>({
        method: "POST",
        path: "/v1/client/sign_in",
        body: input,
        issuesSession: true,
      });
      return { status: "signed_in", session: this.#adopt(raw) };
    } catch (error) {
      if (error instanceof IdmeshError && error.code === "mfa_required" && error.mfaToken) {
        return { status: "mfa_required", mfaToken: error.mfaToken };
      }
      throw error;
    }
  }

  /** Finishes an MFA sign-in with a TOTP code or a backup code. */
  async verifyMfa(input: { mfaToken: string; code?: string; backupCode?: string }): Promise<Session> {
    const raw = await this.#call<RawSession>({
      method: "POST",
      path: "/v1/client/mfa/verify",
      body: { mfa_token: input.mfaToken, code: input.code, backup_code: input.backupCode },
      issuesSession: true,
    });
    return this.#adopt(raw);
  }

  /** Mails a sign-in link to `redirectUrl` (one of the issuer's allowed origins). */
  async sendMagicLink(input: { email: string; redirectUrl: string }): Promise<void> {
    await this.#call({
      method: "POST",
      path: "/v1/client/magic_links",
      body: { email: input.email, redirect_url: input.redirectUrl },
    });
  }

  /** The code a magic link brought to this page, if any (`idm_magic_code`). */
  static magicLinkCode(url: string | URL): string | null {
    return new URL(url).searchParams.get("idm_magic_code");
  }

  async verifyMagicLink(code: string): Promise<SignInResult> {
    return this.#signInWith("/v1/client/magic_links/verify", { code });
  }

  async sendEmailCode(email: string): Promise<void> {
    await this.#call({ method: "POST", path: "/v1/client/email_codes", body: { email } });
  }

  async verifyEmailCode(input: { email: string; code: string }): Promise<SignInResult> {
    return this.#signInWith("/v1/client/email_codes/verify", input);
  }

  /** The signed-in user (refreshing first when the session is about to expire). */
  async me(): Promise<User> {
    const user = await this.#call<User>({ method: "GET", path: "/v1/client/me", session: true });
    if (this.#session) {
      this.#session = { ...this.#session, user };
    }
    return user;
  }

  /** The signed-in user's sessions. */
  async sessions(): Promise<unknown> {
    return this.#call({ method: "GET", path: "/v1/client/sessions", session: true });
  }

  /** Starts TOTP enrollment (nothing changes until `confirmTotp`). */
  async enrollTotp(): Promise<TotpEnrollment> {
    const raw = await this.#call<{ secret: string; otpauth_url: string }>({
      method: "POST",
      path: "/v1/client/mfa/totp",
      session: true,
    });
    return { secret: raw.secret, otpauthUrl: raw.otpauth_url };
  }

  /**
   * Confirms enrollment with a code from the authenticator and answers the
   * backup codes once; replacing an enabled authenticator needs a step-up proof.
   */
  async confirmTotp(code: string, stepUp: StepUp = {}): Promise<unknown> {
    return this.#call({
      method: "POST",
      path: "/v1/client/mfa/totp/confirm",
      body: { code, ...stepUpBody(stepUp) },
      session: true,
    });
  }

  async changePassword(newPassword: string, stepUp: StepUp = {}): Promise<unknown> {
    return this.#call({
      method: "POST",
      path: "/v1/client/password",
      body: { new_password: newPassword, ...stepUpBody(stepUp) },
      session: true,
    });
  }

  /**
   * A session token for the tenant's own backend (header mode only: in cookie
   * mode the token is in an HttpOnly cookie the backend reads itself).
   */
  async getSessionToken(): Promise<string | null> {
    if (this.mode !== "header" || !this.#tokens) {
      return null;
    }
    if (this.#expiresSoon()) {
      await this.refresh();
    }
    return this.#tokens?.session ?? null;
  }

  /**
   * Rotates the refresh token. Concurrent callers share one rotation: two
   * rotations of the same token would be a reuse, which ends the session.
   */
  refresh(): Promise<Session> {
    if (!this.#refreshing) {
      this.#refreshing = this.#rotate().finally(() => {
        this.#refreshing = null;
      });
    }
    return this.#refreshing;
  }

  /** Revokes the session at the edge and forgets it here (also when it was already gone). */
  async signOut(): Promise<void> {
    try {
      await this.#call({ method: "POST", path: "/v1/client/sign_out", session: true });
    } catch (error) {
      if (!(error instanceof IdmeshError && SESSION_ENDED.has(error.code))) {
        throw error;
      }
    } finally {
      this.#forget();
    }
  }

  async #signInWith(path: string, body: unknown): Promise<SignInResult> {
    try {
      const raw = await this.#call<RawSession>({ method: "POST", path, body, issuesSession: true });
      return { status: "signed_in", session: this.#adopt(raw) };
    } catch (error) {
      if (error instanceof IdmeshError && error.code === "mfa_required" && error.mfaToken) {
        return { status: "mfa_required", mfaToken: error.mfaToken };
      }
      throw error;
    }
  }

  async #rotate(): Promise<Session> {
    if (this.mode === "header" && !this.#tokens) {
      throw new IdmeshError({ status: 401, code: "session_invalid", message: "not signed in" });
    }
    const body = this.mode === "header" ? { refresh_token: this.#tokens?.refresh } : {};
    try {
      const raw = await this.#call<RawSession>({
        method: "POST",
        path: "/v1/client/token/refresh",
        body,
        issuesSession: true,
      });
      return this.#adopt(raw);
    } catch (error) {
      if (error instanceof IdmeshError && SESSION_ENDED.has(error.code)) {
        this.#forget();
      }
      throw error;
    }
  }

  #expiresSoon(): boolean {
    return this.#session !== null && this.#session.expiresAt.getTime() - this.#leewayMs <= this.#now();
  }

  #adopt(raw: RawSession): Session {
    const expiresAt = new Date(raw.expires_at);
    if (Number.isNaN(expiresAt.getTime()) || typeof raw.session_id !== "string") {
      throw new IdmeshError({ status: 0, code: "invalid_response", message: "the edge answered an unexpected session" });
    }
    if (this.mode === "header") {
      if (!raw.session_token || !raw.refresh_token) {
        throw new IdmeshError({ status: 0, code: "invalid_response", message: "the edge answered no tokens in header mode" });
      }
      this.#tokens = { session: raw.session_token, refresh: raw.refresh_token };
    }
    this.#session = { sessionId: raw.session_id, expiresAt, user: raw.user ?? this.#session?.user };
    this.#onSessionChange?.(this.#session);
    return this.#session;
  }

  #forget(): void {
    const had = this.#session !== null;
    this.#session = null;
    this.#tokens = null;
    if (had) {
      this.#onSessionChange?.(null);
    }
  }

  async #call<T>(call: Call): Promise<T> {
    if (call.session && this.#expiresSoon()) {
      await this.refresh();
    }
    try {
      return await this.#send<T>(call);
    } catch (error) {
      // A token that expired in flight (clock skew, a sleeping laptop): one
      // refresh and one retry, never a loop.
      const canRetry = call.session && error instanceof IdmeshError && error.code === "session_invalid";
      const refreshable = this.mode === "cookie" || this.#tokens !== null;
      if (canRetry && refreshable && call.path !== "/v1/client/sign_out") {
        await this.refresh();
        return this.#send<T>(call);
      }
      throw error;
    }
  }

  async #send<T>(call: Call): Promise<T> {
    const headers: Record<string, string> = {
      // Always sent: in cookie mode this non-simple header is also what the
      // edge's CSRF check looks for on state-changing requests.
      "Idm-Api-Key": this.#restrictedKey,
      Accept: "application/json",
    };
    if (call.body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    if (this.mode === "cookie" && call.issuesSession) {
      headers["Idm-Session-Mode"] = "cookie";
    }
    if (this.mode === "header" && call.session && this.#tokens) {
      headers.Authorization = `Bearer ${this.#tokens.session}`;
    }
    let response: Response;
    try {
      response = await this.#fetch(this.#baseUrl + call.path, {
        method: call.method,
        headers,
        body: call.body === undefined ? undefined : JSON.stringify(call.body),
        credentials: this.mode === "cookie" ? "include" : "omit",
        cache: "no-store",
      });
    } catch (cause) {
      throw new IdmeshError({
        status: 0,
        code: "network_error",
        message: `the edge could not be reached (${cause instanceof Error ? cause.message : String(cause)})`,
      });
    }
    const text = await response.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!response.ok) {
      throw errorFrom(response, parsed);
    }
    return parsed as T;
  }
}

function errorFrom(response: Response, parsed: unknown): IdmeshError {
  const retry = Number(response.headers.get("Retry-After"));
  const retryAfter = Number.isFinite(retry) && retry >= 0 && response.headers.has("Retry-After") ? retry : undefined;
  const error = (parsed as { error?: Record<string, unknown> } | undefined)?.error;
  if (!error || typeof error.code !== "string") {
    return new IdmeshError({
      status: response.status,
      code: response.status >= 500 ? "upstream_unavailable" : "invalid_response",
      message: `the edge answered ${response.status} without an error body`,
      retryAfter,
    });
  }
  return new IdmeshError({
    status: response.status,
    code: error.code,
    message: typeof error.message === "string" ? error.message : error.code,
    requestId: typeof error.request_id === "string" ? error.request_id : undefined,
    retryAfter,
    mfaToken: typeof error.mfa_token === "string" ? error.mfa_token : undefined,
    details: typeof error.details === "object" && error.details !== null ? (error.details as Record<string, unknown>) : undefined,
  });
}

function stepUpBody(stepUp: StepUp): Record<string, string | undefined> {
  return {
    current_password: stepUp.currentPassword,
    totp_code: stepUp.totpCode,
    backup_code: stepUp.backupCode,
    email_code: stepUp.emailCode,
  };
}
