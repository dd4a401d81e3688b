"""Welkin's own Python SDK (welkin 0.1.12, unchanged) against parlor.

Run by tests/welkin.rs (`the_real_welkin_sdk_works_unchanged_against_parlor`)
in a venv it makes, against a daemon it started. Everything comes from the
environment: PARLOR_ADDR (127.0.0.1:PORT), WELKIN_TENANT, WELKIN_INSTANCE,
WELKIN_CLIENT, WELKIN_SECRET, WELKIN_PATIENT. TMPDIR must be a directory of
this run's own: the SDK caches its token in TMPDIR/.welkin.db, per tenant.

Exits 0 after printing one "welkin sdk: ..." line per step, else with a
traceback.
"""

import os
import sys

from welkin import Client

ADDR = os.environ["PARLOR_ADDR"]
TENANT = os.environ["WELKIN_TENANT"]
INSTANCE = os.environ["WELKIN_INSTANCE"]
CLIENT = os.environ["WELKIN_CLIENT"]
SECRET = os.environ["WELKIN_SECRET"]
PATIENT = os.environ["WELKIN_PATIENT"]
N = 45
CONTENT_PAGE_SIZE = 3


def client(secret):
    c = Client(tenant=TENANT, instance=INSTANCE, api_client=CLIENT, secret_key=secret)
    # The only change a Welkin client needs: the base URL.
    c.host = f"http://{ADDR}/{TENANT}/"
    return c


def step(msg):
    print(f"welkin sdk: {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# A wrong secret gets no token. (First, while the SDK's token cache is
# empty: a cached token would be used without an exchange.) The SDK reads a
# 401's body as Welkin's list of errors; parlor answers API.md's
# {"error","error_code"}, so the SDK fails with its own AttributeError
# rather than a WelkinHTTPError. Either way: no token, nothing sent.
try:
    client("not-the-secret").Chats().get(patient_id=PATIENT)
    raise AssertionError("a wrong secret was let through")
except AssertionError:
    raise
except Exception as e:  # noqa: BLE001
    step(f"a wrong secret is refused ({type(e).__name__})")

welkin = client(SECRET)

# The token exchange: POST {host}admin/api_clients/{name} {"secret"}.
welkin.auth.refresh_token()
check(len(welkin.auth.token) >= 22, "the exchange gave no token")
step("token exchange")

# Inbound through Chat(...).create(patient_id=...).
sent = []
for i in range(N):
    text = f"sdk message {i}" + (" needle" if i % 2 == 0 else "")
    chat = welkin.Chat(message=text).create(patient_id=PATIENT)
    check(chat.message == text, f"create answered {dict(chat)}")
    check(chat.sender["clientType"] == "PATIENT", f"inbound sender {chat.sender}")
    check(chat.sender["id"] == PATIENT, f"inbound sender {chat.sender}")
    check(chat.externalId.startswith("IM"), f"externalId {chat.externalId}")
    sent.append(chat.externalId)
check(len(set(sent)) == N, "externalIds are not unique")
step(f"{N} inbound messages")

# Archive three through the SDK's own session (the SDK has no archive call).
archived = [sent[1], sent[20], sent[44]]
welkin.post(
    f"{INSTANCE}/patients/{PATIENT}/chat/archive", json={"externalIds": archived}
)
step("archived 3")

# The whole history with paginate=True: every message once, newest first.
walked = [m.externalId for m in welkin.Chats().get(patient_id=PATIENT, paginate=True)]
want = [e for e in reversed(sent) if e not in archived]
check(walked == want, f"history walk: {len(walked)} of {len(want)}")
walked = [
    m.externalId
    for m in welkin.Chats().get(patient_id=PATIENT, include_archived=True, paginate=True)
]
check(walked == list(reversed(sent)), f"with archived: {len(walked)} of {N}")
step(f"history walked: {len(want)} messages, {N} with include_archived")

# Search, every page, with a content page size.
hits = list(
    welkin.SearchChats().get(
        patient_id=PATIENT,
        query="NEEDLE",
        content_page_size=CONTENT_PAGE_SIZE,
        paginate=True,
    )
)
want_hits = [sent[i] for i in reversed(range(N)) if i % 2 == 0 and sent[i] not in archived]
got_hits = [h.message["externalId"] for h in hits]
check(got_hits == want_hits, f"search hits {len(got_hits)} of {len(want_hits)}")
check(len(want_hits) > 20, "the search did not need a second page")
step(f"search: {len(hits)} hits over two pages")

# A hit's page through the history endpoint (GET …/chat?pageToken=), as
# Welkin's documentation opens it; also for a hit of the second page.
order = list(reversed(sent))
for hit in (hits[0], hits[5], hits[-2]):
    eid = hit.message["externalId"]
    older, meta = welkin.get(
        f"{INSTANCE}/patients/{PATIENT}/chat",
        params={"pageToken": hit.meta["nextPageToken"]},
        meta_key="meta",
    )
    ids = [m["externalId"] for m in older]
    below = [e for e in order[order.index(eid):] if e not in archived]
    check(ids == below[:CONTENT_PAGE_SIZE], f"older page around {eid}: {ids}")
    check(meta["pageSize"] == CONTENT_PAGE_SIZE, f"page size {meta}")
    newer, _ = welkin.get(
        f"{INSTANCE}/patients/{PATIENT}/chat",
        params={"pageToken": hit.meta["prevPageToken"]},
        meta_key="meta",
    )
    ids = [m["externalId"] for m in newer]
    above = [e for e in order[: order.index(eid) + 1] if e not in archived]
    check(ids == above[-CONTENT_PAGE_SIZE:], f"newer page around {eid}: {ids}")
step("hit pages opened through the history endpoint")

print("welkin sdk: OK", flush=True)
sys.exit(0)
