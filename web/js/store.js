// The client's state, with no DOM and no I/O: the rooms and people of the
// overview, the messages loaded per room (deduplicated by id), unread
// counts, and the catch-up cursor.
//
// The cursor (`lastSeen`) is the id below which nothing can be missing:
// every message of the user's rooms with an id at or below it has been
// received, or was counted by the overview. It moves only
//   - from the overview, the first time (its newest message ids), and
//   - with a live message, but only while no catch-up is running, and
//   - at the end of a complete catch-up (`POST /chat/retrieve` after it).
// Message ids grow in commit order and the socket subscribes before the
// catch-up reads, so the socket and the catch-up together miss nothing;
// duplicates between them are dropped by id.

export const PAGE = 50;

const DAY_MS = 86400000;

/** A message as this client keeps it, from either wire shape. */
export function fromTyped(d) {
  return {
    id: d.id,
    room: String(d.chat),
    sender: String(d.sender.id),
    senderName: d.sender.username,
    text: d.text,
    at: Date.parse(d.timestamp),
  };
}

export function fromRetrieve(m) {
  return {
    id: m.id,
    room: String(m.room),
    sender: String(m.poster),
    senderName: null,
    text: m.message,
    at: m.timestamp * 1000,
  };
}

/** UTC day number of a Unix-ms time (the typed dialect's days are UTC). */
export function utcDay(ms) {
  return Math.floor(ms / DAY_MS);
}

export function ymd(day) {
  return new Date(day * DAY_MS).toISOString().slice(0, 10);
}

export class Store {
  constructor() {
    this.me = null;
    this.people = new Map();
    this.rooms = new Map();
    this.lastSeen = null;
    this.catchingUp = false;
    this.liveMax = 0;
    this.catchUpGen = 0;
  }

  /** Takes a `GET /chat/rooms` answer. Returns whether a room was new. */
  applyOverview(o) {
    this.me = o.me;
    for (const [id, p] of Object.entries(o.people)) this.people.set(id, p);
    let added = false;
    let newest = 0;
    for (const r of o.rooms) {
      const last = r.last_message_id || 0;
      newest = Math.max(newest, last);
      let room = this.rooms.get(r.id);
      if (!room) {
        room = {
          id: r.id,
          ids: [],
          byId: new Map(),
          historyLoaded: false,
          complete: false,
          baseline: 0,
          lastMessageId: 0,
          lastRead: 0,
          unread: 0,
          unreadMore: false,
          updatedAt: 0,
        };
        this.rooms.set(r.id, room);
        added = true;
      }
      room.kind = r.kind;
      room.name = r.name;
      room.patient = r.patient;
      room.members = r.members;
      room.lastRead = Math.max(room.lastRead, r.last_read);
      if (last >= room.lastMessageId) {
        // The overview is at least as fresh as what came live.
        room.unread = r.unread;
        room.unreadMore = r.unread_more;
        room.lastMessageId = last;
        room.updatedAt = Math.max(room.updatedAt, r.updated_at);
      }
      room.baseline = Math.max(room.baseline, last);
    }
    if (this.lastSeen === null) this.lastSeen = newest;
    return added;
  }

  /** Rooms, newest activity first. */
  sortedRooms() {
    return [...this.rooms.values()].sort(
      (a, b) => b.updatedAt - a.updatedAt || Number(b.id) - Number(a.id),
    );
  }

  totalUnread() {
    let n = 0;
    for (const r of this.rooms.values()) n += r.unread;
    return n;
  }

  /**
   * Adds a message. `source` is "live", "catchup" or "history". Returns the
   * room if the message was new to it, `null` if it was a duplicate, and
   * `undefined` if its room is unknown (the overview must be fetched).
   */
  add(m, source) {
    if (source === "live") {
      if (this.catchingUp) this.liveMax = Math.max(this.liveMax, m.id);
      else if (this.lastSeen !== null) this.lastSeen = Math.max(this.lastSeen, m.id);
    }
    const room = this.rooms.get(m.room);
    if (!room) return undefined;
    if (room.byId.has(m.id)) return null;
    room.byId.set(m.id, m);
    // Insert in id order (nearly always at one end).
    let i = room.ids.length;
    while (i > 0 && room.ids[i - 1] > m.id) i--;
    room.ids.splice(i, 0, m.id);
    if (m.id > room.lastMessageId) {
      room.lastMessageId = m.id;
      room.updatedAt = Math.max(room.updatedAt, m.at);
    }
    if (
      source !== "history" &&
      m.id > room.baseline &&
      m.id > room.lastRead &&
      m.sender !== this.me.id
    ) {
      room.unread += 1;
    }
    return room;
  }

  /** Starts a catch-up; returns its number (only the newest one counts). */
  beginCatchUp() {
    this.catchingUp = true;
    this.liveMax = 0;
    return ++this.catchUpGen;
  }

  /** Catch-up `gen` read the log to its end, `cursor` being the last id. */
  endCatchUp(gen, cursor) {
    if (gen !== this.catchUpGen) return;
    this.lastSeen = Math.max(this.lastSeen || 0, cursor, this.liveMax);
    this.catchingUp = false;
  }

  abortCatchUp(gen) {
    if (gen === this.catchUpGen) this.catchingUp = false;
  }

  /**
   * Moves the local read marker of `room` to `id` (forward only) and
   * recounts what is unread among the loaded messages. Returns whether it
   * moved.
   */
  markRead(room, id) {
    if (id <= room.lastRead) return false;
    room.lastRead = id;
    let n = 0;
    for (let i = room.ids.length - 1; i >= 0 && room.ids[i] > id; i--) {
      if (room.byId.get(room.ids[i]).sender !== this.me.id) n++;
    }
    room.unread = n;
    room.unreadMore = false;
    return true;
  }

  /**
   * The `getChatMessages` request for the page before the oldest loaded
   * message. The typed dialect has no "before id" cursor, only `date_to`
   * (a whole UTC day) and `last`; every message from the oldest loaded one
   * on is loaded, so asking for the newest `c + PAGE` messages up to the
   * end of that day, where `c` counts the loaded ones of that day, gives
   * those `c` again plus the `PAGE` before them.
   */
  olderRequest(room) {
    const oldestId = room.ids[0];
    const day = utcDay(room.byId.get(oldestId).at);
    let c = 0;
    while (c < room.ids.length && utcDay(room.byId.get(room.ids[c]).at) === day) c++;
    return {
      before: oldestId,
      data: { chatId: Number(room.id), date_to: ymd(day), last: c + PAGE },
    };
  }
}
