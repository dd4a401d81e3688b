// The parlor web client: sign-in, the room list, a room's history and live
// messages, the composer and the read marker. No framework; state lives in
// `store.js`, the socket in `live.js`, HTTP in `api.js`, DOM in `view.js`.
//
// The token is kept in sessionStorage (this tab only, gone when it
// closes) and removed on sign-out; any 401 ends the session.

import * as api from "./api.js";
import { Live } from "./live.js";
import { Store, PAGE, fromTyped, fromRetrieve } from "./store.js";
import * as view from "./view.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "parlor.session";
const RETRIEVE_PAGE = 500;
const MAX_TEXT_BYTES = 16384;
const HEALTH_EVERY = 30000;

let session = null; // {token, userId}
let store = null;
let live = null;
let active = null; // the open room's id
let loadingOlder = false;
let patientChatTouched = false;
let refreshTimer = null;
let markerTimer = null;
let statusTimer = null;
let lastSent = null;
const pendingMarkers = new Map(); // room id → message id

// ---------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    return s && typeof s.token === "string" ? s : null;
  } catch (e) {
    return null;
  }
}

function showSignIn(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  document.title = "parlor — sign in";
  $(($("username").value ? "password" : "username")).focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  const err = $("signin-error");
  if (!username || !password) {
    err.textContent = "Enter your username and password.";
    err.hidden = false;
    return;
  }
  const button = $("signin-button");
  button.disabled = true;
  err.hidden = true;
  try {
    const r = await api.login(username, password);
    session = { token: r.token, userId: r.user_id };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $("password").value = "";
    startApp();
  } catch (e) {
    err.textContent =
      e.code === "INVALID_CREDENTIALS" ? "Wrong username or password." : e.message;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  const token = session && session.token;
  if (live) live.stop();
  if (token) {
    try {
      await api.logout(token);
    } catch (e) {
      // Already revoked or unreachable: the local session ends anyway.
    }
  }
  endSession(null);
}

/** Forgets the session and everything shown, and asks to sign in. */
function endSession(message) {
  if (live) live.stop();
  live = null;
  store = null;
  session = null;
  active = null;
  patientChatTouched = false;
  pendingMarkers.clear();
  clearTimeout(refreshTimer);
  clearTimeout(markerTimer);
  sessionStorage.removeItem(SESSION_KEY);
  $("rooms").replaceChildren();
  $("messages").replaceChildren();
  $("me-name").textContent = "";
  $("me-detail").textContent = "";
  $("app").classList.remove("in-room");
  $("start").open = false;
  showStartError(null);
  showRoomHead();
  showSignIn(message);
}

function startApp() {
  store = new Store();
  active = null;
  $("signin").hidden = true;
  $("app").hidden = false;
  showRoomHead();
  live = new Live({
    url: () => {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      return `${proto}//${location.host}/ws?token=${encodeURIComponent(session.token)}`;
    },
    prepare: refreshOverview,
    afterOpen: catchUp,
    onFrame,
    onState: showConnState,
    onUnauthorized: () => endSession("Your session has ended. Please sign in again."),
  });
  live.start();
}

// ---------------------------------------------------------------------------
// Overview and catch-up
// ---------------------------------------------------------------------------

async function refreshOverview() {
  const o = await api.rooms(session.token);
  if (!store) return;
  store.applyOverview(o);
  $("me-name").textContent = o.me.display_name;
  $("me-detail").textContent = `@${o.me.username} · ${o.me.role} · user number ${o.me.id}`;
  // Patients write to their care team; they do not start other chats.
  $("start").hidden = o.me.role === "patient";
  renderRoomList();
  if (active) showRoomHead();
  // A patient's own care-team chat is made on first use (API.md §5).
  const own = o.rooms.some((r) => r.kind === "patient" && r.patient === o.me.id);
  if (o.me.role === "patient" && !own && !patientChatTouched) {
    patientChatTouched = true;
    try {
      await api.touchPatientChat(session.token, o.me);
      await refreshOverview();
    } catch (e) {
      if (e instanceof api.Unauthorized) throw e;
    }
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (!store) return;
    refreshOverview().catch((e) => {
      if (e instanceof api.Unauthorized) endSession(e.message);
    });
  }, 250);
}

/** Everything committed after the cursor, read once the socket is open. */
async function catchUp() {
  const gen = store.beginCatchUp();
  let cursor = store.lastSeen || 0;
  try {
    for (;;) {
      const page = await api.retrievePage(session.token, cursor, RETRIEVE_PAGE);
      for (const m of page) {
        receive(fromRetrieve(m), "catchup");
        cursor = Math.max(cursor, m.id);
      }
      if (page.length < RETRIEVE_PAGE) break;
    }
    store.endCatchUp(gen, cursor);
  } catch (e) {
    store.abortCatchUp(gen);
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Live frames
// ---------------------------------------------------------------------------

function onFrame(f) {
  if (!store) return;
  switch (f.type) {
    case "messageCreated":
      receive(fromTyped(f.data), "live");
      break;
    case "chatJoined": {
      const room = store.rooms.get(String(f.data.chat));
      const who = String(f.data.user.id);
      if (!room || !(room.members || []).includes(who)) {
        scheduleRefresh();
      } else if (who === store.me.id && f.data.last_read_message) {
        // Read in another tab of ours.
        if (store.markRead(room, f.data.last_read_message)) renderRoomList();
      }
      break;
    }
    case "error":
      if (f.data && f.data.request_type === "newMessage") {
        showSendError(`Not sent: ${f.data.message}`);
        if (lastSent && !$("text").value) $("text").value = lastSent;
      }
      break;
    default:
      break;
  }
}

/** One message from any source, deduplicated by id. */
function receive(m, source) {
  const room = store.add(m, source);
  if (room === undefined) {
    scheduleRefresh(); // a room we did not know yet
    return;
  }
  if (room === null) return; // seen already
  if (room.id === active) {
    const sc = $("scroller");
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 48;
    view.insertInOrder($("messages"), view.messageItem(store, m), m.id);
    if (source !== "history") {
      if (atBottom || m.sender === store.me.id) sc.scrollTop = sc.scrollHeight;
      requestAnimationFrame(markVisibleRead);
    }
  }
  if (source !== "history") renderRoomList();
}

// ---------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------

function renderRoomList() {
  if (!store || !store.me) return;
  view.renderRooms($("rooms"), store, active, openRoom);
  $("rooms-empty").hidden = store.rooms.size > 0;
  const n = store.totalUnread();
  document.title = n > 0 ? `(${n}) parlor` : "parlor";
}

function showRoomHead() {
  const room = active && store ? store.rooms.get(active) : null;
  $("room-title").textContent = room ? view.roomTitle(store, room) : "Choose a conversation";
  $("room-detail").textContent = room ? view.roomDetail(room) : "";
  $("composer").hidden = !room;
  $("scroller").hidden = !room;
}

async function openRoom(id) {
  const room = store.rooms.get(id);
  if (!room) return;
  active = id;
  loadingOlder = false;
  $("app").classList.add("in-room");
  $("send-error").hidden = true;
  showRoomHead();
  $("messages").replaceChildren(...room.ids.map((i) => view.messageItem(store, room.byId.get(i))));
  updateHistoryEdge();
  renderRoomList();
  $("text").focus();
  if (!room.historyLoaded) await loadInitial(room);
  if (active !== id) return;
  const sc = $("scroller");
  sc.scrollTop = sc.scrollHeight;
  markVisibleRead();
  fillViewport();
}

function closeRoom() {
  active = null;
  $("app").classList.remove("in-room");
  $("messages").replaceChildren();
  showRoomHead();
  renderRoomList();
  const b = $("rooms").querySelector("button");
  if (b) b.focus();
}

async function loadInitial(room) {
  if (!live || !live.isOpen()) return; // loaded when the socket is back
  $("history-loading").hidden = false;
  try {
    const f = await live.request(
      "getChatMessages",
      { chatId: Number(room.id), last: PAGE },
      (fr) => fr.type === "chatMessages",
    );
    for (const d of f.data) receive(fromTyped(d), "history");
    room.historyLoaded = true;
    room.complete = f.data.length < PAGE;
  } catch (e) {
    showHistoryError(e);
  } finally {
    $("history-loading").hidden = true;
    updateHistoryEdge();
  }
}

/** The page before the oldest loaded message, kept in place on screen. */
async function loadOlder() {
  const room = active && store.rooms.get(active);
  if (!room || loadingOlder || room.complete || !room.historyLoaded || !room.ids.length) return;
  if (!live || !live.isOpen()) return;
  loadingOlder = true;
  $("history-loading").hidden = false;
  const { before, data } = store.olderRequest(room);
  try {
    const f = await live.request("getChatMessages", data, (fr) => fr.type === "chatMessages");
    const sc = $("scroller");
    const fromBottom = sc.scrollHeight - sc.scrollTop;
    for (const d of f.data) if (d.id < before) receive(fromTyped(d), "history");
    if (f.data.length < data.last) room.complete = true;
    if (room.id === active) sc.scrollTop = sc.scrollHeight - fromBottom;
  } catch (e) {
    showHistoryError(e);
  } finally {
    loadingOlder = false;
    $("history-loading").hidden = true;
    updateHistoryEdge();
  }
  fillViewport();
}

/** Loads older pages until the list can scroll (or history ends). */
function fillViewport() {
  const sc = $("scroller");
  const room = active && store && store.rooms.get(active);
  if (room && !room.complete && room.historyLoaded && sc.scrollHeight <= sc.clientHeight + 8) {
    loadOlder();
  }
}

function updateHistoryEdge() {
  const room = active && store && store.rooms.get(active);
  const done = !!room && room.historyLoaded && room.complete;
  $("history-start").hidden = !done;
  $("older").hidden = !room || done || !room.historyLoaded;
}

function showHistoryError(e) {
  const p = $("history-loading");
  p.textContent = `History could not be loaded: ${e.message}`;
  p.hidden = false;
  setTimeout(() => {
    p.textContent = "Loading…";
  }, 4000);
}

// ---------------------------------------------------------------------------
// Starting a conversation
// ---------------------------------------------------------------------------

function showStartError(text) {
  const p = $("start-error");
  p.textContent = text || "";
  p.hidden = !text;
}

/** Opens a room we just made or joined, once the overview knows it. */
async function openNew(roomId) {
  await refreshOverview();
  $("dm-user").value = "";
  $("open-chat").value = "";
  $("start").open = false;
  if (store && store.rooms.has(roomId)) await openRoom(roomId);
}

/** `POST /chat/create_dm {"other"}`: the DM with a user, by number. */
async function startDm(ev) {
  ev.preventDefault();
  const other = $("dm-user").value.trim();
  if (!/^[0-9]+$/.test(other)) return showStartError("Enter a user number, e.g. 3.");
  showStartError(null);
  try {
    const r = await api.createDm(session.token, other);
    await openNew(r.room_id);
  } catch (e) {
    if (e instanceof api.Unauthorized) return endSession(e.message);
    showStartError(e.status === 404 ? `There is no user number ${other} you can write to.` : e.message);
  }
}

/**
 * Joins an open chat by number, or makes a new one (`createEmptyChat`, then
 * `joinChat`: the creator is not a participant until it joins).
 */
async function joinOpen(ev) {
  ev.preventDefault();
  const wanted = $("open-chat").value.trim();
  if (wanted && !/^[0-9]+$/.test(wanted)) return showStartError("Enter a chat number, or nothing.");
  if (!live || !live.isOpen()) return showStartError("Not connected; try again in a moment.");
  showStartError(null);
  const me = store.me.id;
  try {
    let chat = Number(wanted);
    if (!wanted) {
      const made = await live.request("createEmptyChat", {}, (f) => f.type === "emptyChatCreated");
      chat = made.data.id;
    }
    await live.request(
      "joinChat",
      { chat },
      (f) => f.type === "chatJoined" && f.data.chat === chat && String(f.data.user.id) === me,
    );
    await openNew(String(chat));
  } catch (e) {
    if (e instanceof api.Unauthorized) return endSession(e.message);
    showStartError(e.code === "NOT_FOUND" ? `There is no open chat number ${wanted} to join.` : e.message);
  }
}

// ---------------------------------------------------------------------------
// Read marker
// ---------------------------------------------------------------------------

/**
 * Moves the read marker to the newest message on screen (everything above
 * it counts as read) and tells the server, a little later, with
 * `joinChat {chat, last_read_message}` — which for a room one is in only
 * moves the marker, forward only, and every dialect sees it.
 */
function markVisibleRead() {
  if (!active || !store || document.visibilityState !== "visible") return;
  const room = store.rooms.get(active);
  const sc = $("scroller");
  const bottom = sc.getBoundingClientRect().bottom;
  let upto = 0;
  for (let c = $("messages").lastElementChild; c; c = c.previousElementSibling) {
    if (c.getBoundingClientRect().top < bottom) {
      upto = Number(c.dataset.id);
      break;
    }
  }
  if (!room || !upto || !store.markRead(room, upto)) return;
  renderRoomList();
  pendingMarkers.set(room.id, Math.max(upto, pendingMarkers.get(room.id) || 0));
  clearTimeout(markerTimer);
  markerTimer = setTimeout(flushMarkers, 300);
}

function flushMarkers() {
  if (!live || !live.isOpen()) return; // sent once the socket is back
  for (const [roomId, id] of pendingMarkers) {
    pendingMarkers.delete(roomId);
    const me = store.me.id;
    live
      .request(
        "joinChat",
        { chat: Number(roomId), last_read_message: id },
        (f) =>
          f.type === "chatJoined" &&
          String(f.data.chat) === roomId &&
          String(f.data.user.id) === me,
      )
      .catch(() => {
        // Lost with the socket: the next view of the room moves it again.
      });
  }
}

// ---------------------------------------------------------------------------
// Composer
// ---------------------------------------------------------------------------

function showSendError(text) {
  const p = $("send-error");
  p.textContent = text;
  p.hidden = !text;
}

function send() {
  const box = $("text");
  const text = box.value;
  if (!active || text.trim() === "") return;
  if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
    showSendError(`A message can be at most ${MAX_TEXT_BYTES} bytes.`);
    return;
  }
  if (!live || !live.send("newMessage", { chat: Number(active), text })) {
    showSendError("Not connected — the message was not sent; it is still in the box.");
    return;
  }
  lastSent = text;
  box.value = "";
  showSendError("");
}

function onComposerKey(e) {
  if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
}

// ---------------------------------------------------------------------------
// Status corner
// ---------------------------------------------------------------------------

function showConnState(state, detail) {
  const p = $("conn-status");
  const retry = $("retry");
  clearInterval(statusTimer);
  p.dataset.state = state;
  if (state === "live") {
    p.textContent = "Live";
    retry.hidden = true;
    flushMarkers();
    const room = active && store && store.rooms.get(active);
    if (room && !room.historyLoaded) {
      loadInitial(room).then(() => {
        $("scroller").scrollTop = $("scroller").scrollHeight;
        markVisibleRead();
      });
    }
  } else if (state === "offline") {
    const tick = () => {
      const s = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
      p.textContent = `Offline — reconnecting in ${s} s`;
    };
    tick();
    statusTimer = setInterval(tick, 1000);
    retry.hidden = false;
  } else if (state === "connecting") {
    p.textContent = "Connecting…";
    retry.hidden = true;
  } else {
    p.textContent = "Signed out";
    retry.hidden = true;
  }
}

const SERVED = [
  ["/", "this web client"],
  ["/ws", "typed WebSocket (seed 002)"],
  ["/chat/connect", "rooms WebSocket and REST (seed 001)"],
  ["/actions", "actions WebSocket (seed 000)"],
  ["/{tenant}/{instance}/patient/{id}/chat", "patient REST (seeds 003, 004)"],
  ["/chat/rooms", "room overview with unread counts"],
  ["/healthz", "health check"],
];

function buildHealth() {
  for (const section of document.querySelectorAll(".health")) {
    const line = view.el("p");
    line.append("Server: ", view.el("span", "state", "checking…"));
    const details = view.el("details");
    details.append(view.el("summary", "", "What this server serves"));
    const ul = view.el("ul");
    for (const [path, what] of SERVED) {
      const li = view.el("li");
      li.append(view.el("code", "", path), ` — ${what}`);
      ul.append(li);
    }
    details.append(ul);
    section.replaceChildren(line, details);
  }
}

async function checkHealth() {
  let ok = false;
  try {
    const r = await api.health();
    ok = !!r && r.status === "ok";
  } catch (e) {
    ok = false;
  }
  const at = view.shortTime(Date.now());
  for (const s of document.querySelectorAll(".health .state")) {
    s.className = ok ? "state ok" : "state down";
    s.textContent = ok ? `running (checked ${at})` : `not answering (checked ${at})`;
  }
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

function init() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("back").addEventListener("click", closeRoom);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("text").addEventListener("keydown", onComposerKey);
  $("older").addEventListener("click", loadOlder);
  $("dm-form").addEventListener("submit", startDm);
  $("open-form").addEventListener("submit", joinOpen);
  let scrollQueued = false;
  $("scroller").addEventListener("scroll", () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      if ($("scroller").scrollTop < 120) loadOlder();
      markVisibleRead();
    });
  });
  document.addEventListener("visibilitychange", markVisibleRead);
  window.addEventListener("online", () => live && live.retryNow());

  const retry = view.el("button", "", "Retry now");
  retry.type = "button";
  retry.id = "retry";
  retry.hidden = true;
  retry.addEventListener("click", () => live && live.retryNow());
  $("conn-status").after(retry);

  buildHealth();
  checkHealth();
  setInterval(checkHealth, HEALTH_EVERY);

  session = loadSession();
  if (session) startApp();
  else showSignIn(null);
}

init();
