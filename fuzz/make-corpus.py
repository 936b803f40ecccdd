#!/usr/bin/env python3
"""Write the seed corpora under fuzz/corpus/ (committed; rerun to refresh).

Seeds are small real inputs: Cyrus files from tests/fixtures (written by real
Cyrus), protocol exchanges as our client and server speak them, archive members as
stock tar/gzip make them, and catalog row recipes."""
import glob, gzip, hashlib, io, json, os, shutil, tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
FIX = os.path.join(ROOT, "tests", "fixtures")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


shutil.rmtree(OUT, ignore_errors=True)
H = "ab" * 32

# protocol_server: mode byte (0 closed with secret, 1 closed without, 2 open) + lines
sessions = {
    "base": b"PING\nUSERS imap1\nMETA imap1 bob\nMETA imap1 bob seen sub\n"
            b"FMULTISTATUS imap1 bob\nFMETA imap1 bob INBOX\n"
            b"FMETA imap1 bob INBOX header index annotations mailbox_annotations\n"
            b"FDATA imap1 bob INBOX 1 2 7\nQUIT\n",
    "ext": b"CAPABILITY imap1\nSTATUS imap1\nSNAPSHOT imap1 bob\nPARTITIONS imap1\n",
    "auth": ("CAPABILITY imap1\nSTARTTLS imap1\nAUTH imap1 BEGIN %s\nAUTH imap1 ANSWER %s\nUSERS imap1\n" % (H, H)).encode(),
    "refusals": b"FMETA imap1 ..%2Fx INBOX header\nFDATA imap1 bob INBOX%00 1\nUSERS wrong\n"
                b"FMETA imap1 \"quoted name\" {3}\r\nabc\nFROB imap1\nMETA imap1  bob\n",
}
for name, s in sessions.items():
    for mode in (0, 1, 2):
        put("protocol_server", "%s-%d" % (name, mode), bytes([mode]) + s)
for t in sorted(glob.glob(os.path.join(ROOT, "tests", "transcripts", "*.txt")))[:12]:
    lines = [l[3:] for l in open(t, encoding="utf-8", errors="replace").read().splitlines() if l.startswith("C: ")]
    put("protocol_server", "transcript-" + os.path.basename(t), b"\x02" + ("\n".join(lines) + "\n").encode())


# protocol_client: what a server sends for the client's fixed call sequence
def data_frame(name, body):
    return b"DATA %s %d 1700000000 42\n" % (name, len(body)) + body + b"DONE %s %s\n" % (name, hashlib.sha1(body).hexdigest().encode())


caps = b"OK\nCAP VERSION 2\nCAP AUTH HMAC-SHA256-MUTUAL\nCAP STATUS\nCAP SNAPSHOT\nCAP PARTITIONS\nDONE CAPABILITY\n"
auth = ("OK\nCHALLENGE %s\nDONE AUTH\nOK\nPROOF %s\nDONE AUTH\n" % ("11" * 32, "22" * 32)).encode()
users = b"OK\nUSER bob\nUSER carol\nDONE USERS\n"
parts = b"OK\nPARTITION p1 %2Fsrv%2Fp1 2049\nUSERPART bob p1\nDONE PARTITIONS\n"
meta = b"OK\nSTAT seen 10 1700000000 5\nDONE META\n"
fms = (b"OK\nFOLDER INBOX u-inbox \nSTAT INBOX header 3 1 11\nSTAT INBOX index 3 1 12\n"
       b"FOLDER Sent%20Items u-sent J\nDONE FMULTISTATUS\n")
fmeta = b"OK\nSTAT header 3 1 11\nSTAT index 3 1 12\nDONE FMETA u-inbox \n"
fdata = b"OK\n" + data_frame(b"1", b"Subject: x\r\n\r\nbody\r\n") + b"NO no such file 2\n" + data_frame(b"3", b"") + b"DONE FDATA u-inbox \n"
snap = (b"OK\n" + data_frame(b"seen", b"seen-db") + b"NO no such file sub\n" + data_frame(b"sieve/main.script", b"keep;")
        + b"FOLDER INBOX u-inbox \n" + data_frame(b"header", b"HDR") + data_frame(b"index", b"IDX")
        + b"NO no such file annotations\nDONE SNAPSHOT 1\n")
ping = b"OK\nDONE PING\n"
put("protocol_client", "full", caps + auth + users + parts + meta + fms + fmeta + fdata + snap + ping)
put("protocol_client", "stock", b"NO bad command\n" + b"NO bad command\n" + users + b"NO bad command\n" + meta + fms + fmeta + fdata)
put("protocol_client", "refusals", b"NO iam imap9\nNO authentication required\nNO too many unauthenticated connections from this address\n")
put("protocol_client", "x86-encoding", b"OK\nUSER b%FFFFFFE9b\nUSER %41%4\nDONE USERS\n")

# twoskip: real databases written by Cyrus
for p in sorted(glob.glob(os.path.join(FIX, "mboxlist", "*.db")) + glob.glob(os.path.join(FIX, "mboxlist", "*.twoskip"))):
    data = open(p, "rb").read()
    if data[:4] == b"\xa1\x02\x8b\x0d":  # twoskip magic
        put("twoskip", os.path.basename(p), data)

# cyrus_index: selector byte (0 index, 1 header, 2 cache behind an index)
for p in sorted(glob.glob(os.path.join(FIX, "cyrus-index", "*.cyrus.index"))):
    put("cyrus_index", "index-" + os.path.basename(p), b"\x00" + open(p, "rb").read())
for p in sorted(glob.glob(os.path.join(FIX, "header", "*.header")))[:8]:
    put("cyrus_index", "header-" + os.path.basename(p), b"\x01" + open(p, "rb").read())
for v in ("v12", "v19", "old-v19"):
    idx = os.path.join(FIX, "cyrus-index", v + ".cyrus.index")
    cache = os.path.join(FIX, "cyrus-index", v + ".cyrus.cache")
    if os.path.exists(idx) and os.path.exists(cache):
        i = open(idx, "rb").read()
        pad = (-len(i)) % 16
        if len(i) + pad <= 255 * 16:
            cut = (len(i) + pad) // 16
            # the cut byte is also the index's first byte; the target splits at byte*16
            put("cyrus_index", "cache-" + v, b"\x02" + bytes([cut]) + i[1:] + b"\0" * pad + open(cache, "rb").read())

# dlist: mailboxes.db values and other dlist syntax
for i, d in enumerate([
    b"%(T e N user\x1falice P default V 17 A %(alice lrs) H ())",
    b"%(A %(cyrus lrswipkxtecdan) I 5f8f3c1e-0d5c-4a3b-9d6c-1e2f3a4b5c6d N user.bob P p1 T e M 1700000000)",
    b"(a b (c d) NIL \"q\\\"uoted\" {3}\r\nabc)",
    b"%(H (%(F 1 T 2 N old.name P p1 M 1)) S 1)",
    b"{0+}\r\n",
]):
    put("dlist", "seed-%d" % i, d)


# archive_read: gzip members of tar streams, as archives hold them
def member(entries):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(b.getvalue(), mtime=0)


msg = b"Subject: hi\r\n\r\nbody\r\n"
guid = hashlib.sha1(msg).hexdigest()
manifest = json.dumps({"format": 1, "run": 1, "user": "bob", "started": 1700000000, "finished": 1700000001,
                       "server": "imap1:2005", "tool_version": "seed", "folders": [], "user_state": None,
                       "members": [0]}).encode()
one = member([("cyrvault/FORMAT", b"cyrvault archive format 1\n"),
              ("messages/%s/%s" % (guid[:2], guid), msg),
              ("folders/u-inbox/000001/cyrus.header", b"HDR")])
two = member([("runs/000001.json", manifest)])
put("archive_read", "one-member", one)
put("archive_read", "two-members", one + two)
put("archive_read", "truncated", (one + two)[:-9])
put("archive_read", "garbage-between", one + b"\0" * 700 + two)

# catalog_rows: any bytes; a few recipes that reach each table
for i in range(9):
    put("catalog_rows", "table-%d" % i, bytes([3, i, 1, 7, 4, 5]) + b"hello" + bytes([i, 4, 2]) + b"{}" + bytes([5, 20]) + bytes(range(20)))
put("catalog_rows", "json", bytes([2, 6]) + bytes([4, 30]) + b'{"uidvalidity":1,"last_uid":"x"}' + bytes([4, 2]) + b"[]")
print("corpora written:", {t: len(os.listdir(os.path.join(OUT, t))) for t in sorted(os.listdir(OUT))})
