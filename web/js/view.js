// Rendering. Text from the server is only ever set with `textContent`
// (never `innerHTML`), so a message is shown as the text it is.

const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() &&
  a.getMonth() === b.getMonth() &&
  a.getDate() === b.getDate();

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "numeric",
  minute: "2-digit",
});
const yearFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

/** A time in the browser's locale and time zone, shorter when recent. */
export function shortTime(ms, now = new Date()) {
  const d = new Date(ms);
  if (sameDay(d, now)) return timeFmt.format(d);
  if (d.getFullYear() === now.getFullYear()) return dateTimeFmt.format(d);
  return yearFmt.format(d);
}

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function personName(store, id) {
  const p = store.people.get(id);
  return p ? p.display_name : null;
}

/** What to call a room for the signed-in user. */
export function roomTitle(store, room) {
  if (room.name) return room.name;
  const me = store.me.id;
  const others = (room.members || []).filter((u) => u !== me);
  const name = (u) => personName(store, u) || `User ${u}`;
  if (room.kind === "patient") {
    return room.patient === me ? "Your care team" : name(room.patient);
  }
  if (room.kind === "dm") return others.length ? name(others[0]) : "Notes to self";
  if (others.length === 0) return `${room.kind === "open" ? "Open chat" : "Group"} #${room.id}`;
  const shown = others.slice(0, 3).map(name).join(", ");
  return others.length > 3 ? `${shown} +${others.length - 3}` : shown;
}

export function roomDetail(room) {
  const n = (room.members || []).length;
  switch (room.kind) {
    case "dm":
      return "Direct message";
    case "patient":
      return `Patient chat · ${n} members`;
    case "open":
      return `Open chat #${room.id} · ${n} members`;
    default:
      return `Group · ${n} members`;
  }
}

export function unreadLabel(room) {
  if (room.unreadMore || room.unread > 99) return "99+";
  return String(room.unread);
}

/** Redraws the room list, keeping keyboard focus on the same room. */
export function renderRooms(ul, store, activeId, onOpen) {
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.room
    : undefined;
  const items = [];
  for (const room of store.sortedRooms()) {
    const li = el("li");
    const b = el("button");
    b.type = "button";
    b.dataset.room = room.id;
    const title = roomTitle(store, room);
    b.append(el("span", "title", title), el("span", "detail", roomDetail(room)));
    let label = title;
    if (room.unread > 0 || room.unreadMore) {
      li.className = "unread";
      const badge = el("span", "badge", unreadLabel(room));
      badge.setAttribute("aria-hidden", "true");
      b.append(badge);
      label += `, ${unreadLabel(room)} unread`;
    }
    b.setAttribute("aria-label", `${label} (${roomDetail(room)})`);
    if (room.id === activeId) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => onOpen(room.id));
    li.append(b);
    items.push(li);
  }
  ul.replaceChildren(...items);
  if (focused) {
    const again = ul.querySelector(`button[data-room="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

/** One message as a list item. */
export function messageItem(store, m) {
  const mine = m.sender === store.me.id;
  const li = el("li", mine ? "msg mine" : "msg");
  li.dataset.id = String(m.id);
  const meta = el("div", "meta");
  const who = mine ? "You" : personName(store, m.sender) || m.senderName || `User ${m.sender}`;
  const t = el("time", "", shortTime(m.at));
  t.dateTime = new Date(m.at).toISOString();
  t.title = fullFmt.format(new Date(m.at));
  meta.append(el("span", "who", who), t);
  li.append(meta, el("p", "text", m.text));
  return li;
}

/** Inserts `li` into `ol` in id order (items carry `data-id`). */
export function insertInOrder(ol, li, id) {
  let next = null;
  for (let c = ol.lastElementChild; c; c = c.previousElementSibling) {
    if (Number(c.dataset.id) < id) break;
    next = c;
  }
  ol.insertBefore(li, next);
}
