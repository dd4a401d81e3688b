// parlor's public HTTP API, as this client uses it:
//   POST /auth/login, POST /auth/logout            (API.md §1)
//   GET  /chat/rooms                                (the room overview)
//   POST /chat/retrieve {"after","limit"}           (rooms dialect, §2)
//   POST /chat/create_dm {"other"}                  (rooms dialect, §2)
//   GET  /{tenant}/{instance}/patient/{id}/chat     (patient dialect, §5)
//   GET  /healthz
// Every authenticated call sends `Authorization: Bearer <token>`; a 401
// from any of them throws `Unauthorized`, which the app turns into "sign
// in again".

export class Unauthorized extends Error {
  constructor() {
    super("Your session has ended. Please sign in again.");
    this.name = "Unauthorized";
  }
}

/** A REST error `{"error","error_code"}`, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, "NETWORK", "The server cannot be reached.");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    if (res.ok) throw new ApiError(res.status, "BAD_REPLY", "The server's answer was not understood.");
  }
  if (res.ok) return data;
  if (res.status === 401 && token) throw new Unauthorized();
  const message = (data && data.error) || `The server answered ${res.status}.`;
  throw new ApiError(res.status, (data && data.error_code) || "HTTP_" + res.status, message);
}

/** `{"token","user_id"}`; throws ApiError (401 INVALID_CREDENTIALS, 429 …). */
export function login(username, password) {
  return call("POST", "/auth/login", { body: { username, password } });
}

export function logout(token) {
  return call("POST", "/auth/logout", { token });
}

/** `{"me","rooms","people"}` — see the README's "The web client". */
export function rooms(token) {
  return call("GET", "/chat/rooms", { token });
}

/** `{"room_id"}`: the one DM of the caller and user `other` (made on first use). */
export function createDm(token, other) {
  return call("POST", "/chat/create_dm", { token, body: { other } });
}

/**
 * Every message after `after` in every room of the caller, ascending, in
 * pages of `limit`, as the rooms dialect shows them.
 */
export async function retrievePage(token, after, limit) {
  const r = await call("POST", "/chat/retrieve", { token, body: { after, limit } });
  return r.messages;
}

/** Opens (and on first use creates) a patient's own care-team chat. */
export function touchPatientChat(token, me) {
  const path = ["", me.tenant, me.instance, "patient", me.id, "chat"]
    .map(encodeURIComponent)
    .join("/");
  return call("GET", `${path}?pageSize=1`, { token });
}

export async function health() {
  return call("GET", "/healthz");
}
