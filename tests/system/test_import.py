"""Catalog imports: POST /v1/imports (net/ingest.c, import/, CMD_IMPORT and CMD_IMPORT_DONE).

Each format; the Library module's six-item sample file; the same file twice; rows rejected with
their line and reason while the others land; files refused as a whole; limits; roles; an import
killed halfway (kill -9) then sent again, which completes it.
"""

import hashlib
import json
import os
import time

import harness
from harness import Lazy, Node, expect, uid

node = Lazy(name="import")

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                      "library-sample.json")
OCTET = {"Content-Type": "application/octet-stream"}


def post(n, data, token, query="", headers=None, timeout=120):
    return n.request("POST", "/v1/imports" + query, data, token=token,
                     headers=dict(OCTET, **(headers or {})), timeout=timeout)


def counts(n, token):
    return expect(n.request("GET", "/v1/resources/counts", token=token), 200)


def jsonl(rows):
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def test_library_sample_file_imports_with_its_counts_and_kept_ids():
    n = Node(name="import-sample")
    try:
        lib = n.librarian()
        data = open(SAMPLE, "rb").read()
        items = json.loads(data)
        s = expect(post(n, data, lib, "?name=library-sample.json"), 200)
        assert (s["format"], s["rows"], s["created"], s["updated"], s["unchanged"],
                s["rejected"], s["duplicate"]) == ("library", 6, 6, 0, 0, 0, False), s
        assert s["sha256"] == hashlib.sha256(data).hexdigest(), s
        assert s["name"] == "library-sample.json" and s["rejections"] == [], s
        harness.parse_time(s["imported_at"])
        c = counts(n, lib)
        assert (c["FANTASY"], c["POETRY"], c["NONFICTION"]) == (3, 1, 2), c
        assert sum(c.values()) == 6, c
        for it in items:
            r = expect(n.request("GET", "/v1/resources/" + it["contentId"], token=lib), 200)
            assert (r["title"], r["type"], r["copies"], r["premium"]) == \
                (it["title"], it["contentType"], 1, False), r
    finally:
        n.stop()


def test_same_file_twice_is_a_no_op_that_says_so():
    n = node()
    lib = n.librarian()
    rows = [{"id": uid(), "title": "Twice %d" % i, "type": "HISTORY"} for i in range(3)]
    data = jsonl(rows)
    first = expect(post(n, data, lib), 200)
    assert (first["created"], first["duplicate"]) == (3, False), first
    before = [expect(n.request("GET", "/v1/resources/" + r["id"], token=lib), 200) for r in rows]
    again = expect(post(n, data, lib, "?name=renamed.jsonl"), 200)
    assert again["duplicate"] is True, again
    assert (again["sha256"], again["created"], again["imported_at"], again["name"]) == \
        (first["sha256"], 3, first["imported_at"], first["name"]), (first, again)
    after = [expect(n.request("GET", "/v1/resources/" + r["id"], token=lib), 200) for r in rows]
    assert before == after  # not even updated_at moved
    # the same rows in another file (one byte more) are not a duplicate file: all unchanged
    third = expect(post(n, data + b"\n", lib), 200)
    assert (third["duplicate"], third["created"], third["unchanged"]) == (False, 0, 3), third


def test_jsonl_and_csv_upsert_by_id_keeping_what_a_row_leaves_out():
    n = node()
    lib = n.librarian()
    a, b = uid(), uid()
    rows = [{"id": a, "title": "Dune", "type": "FANTASY", "copies": 3, "premium": True,
             "authors": ["Frank Herbert"], "tags": ["sf", "classic"]},
            {"id": b, "title": "Ariel", "type": "POETRY"}]
    s = expect(post(n, jsonl(rows), lib), 200)
    assert (s["format"], s["created"]) == ("jsonl", 2), s
    got = expect(n.request("GET", "/v1/resources/" + a, token=lib), 200)
    for k, v in rows[0].items():
        assert got[k] == v, (k, got)
    assert got["available"] == 3, got
    # CSV: a changes its title only (copies, premium, authors, tags kept); b is the same
    csv = ("ID,Title,Type\r\n%s,\"Dune, Messiah\",FANTASY\r\n%s,Ariel,POETRY\r\n" % (a, b)).encode()
    s = expect(post(n, csv, lib), 200)
    assert (s["format"], s["created"], s["updated"], s["unchanged"]) == ("csv", 0, 1, 1), s
    got = expect(n.request("GET", "/v1/resources/" + a, token=lib), 200)
    assert (got["title"], got["copies"], got["premium"], got["authors"], got["tags"]) == \
        ("Dune, Messiah", 3, True, ["Frank Herbert"], ["sf", "classic"]), got
    # CSV with every column, as text/csv
    c = uid()
    csv = ("id,title,type,copies,premium,authors,tags\n"
           "%s,Kindred,FICTION,2,yes,Octavia E. Butler,\"sf; time travel\"\n" % c).encode()
    s = expect(post(n, csv, lib, headers={"Content-Type": "text/csv"}), 200)
    assert s["created"] == 1, s
    got = expect(n.request("GET", "/v1/resources/" + c, token=lib), 200)
    assert (got["copies"], got["premium"], got["authors"], got["tags"]) == \
        (2, True, ["Octavia E. Butler"], ["sf", "time travel"]), got


def test_bad_rows_are_rejected_with_line_and_reason_and_the_rest_land():
    n = node()
    lib = n.librarian()
    good, dup = uid(), uid()
    lines = [
        json.dumps({"id": good, "title": "Fine", "type": "AUDIO"}),          # 1
        json.dumps({"id": uid(), "title": "Comic", "type": "COMIC"}),        # 2 unknown type
        "",                                                                   # 3 blank
        json.dumps({"id": dup, "title": "First", "type": "VIDEO"}),          # 4
        json.dumps({"id": dup, "title": "Second", "type": "VIDEO"}),         # 5 duplicate id
        json.dumps({"id": "not-a-uuid", "title": "x", "type": "VIDEO"}),     # 6
        json.dumps({"id": uid(), "title": "x" * 501, "type": "VIDEO"}),      # 7 too long
        "{not json",                                                          # 8
        json.dumps({"id": uid(), "title": "x", "type": "VIDEO", "isbn": 1}),  # 9 unknown field
        json.dumps({"id": uid(), "type": "VIDEO"}),                           # 10 no title
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"id":"' + uid().encode() + \
        b'","title":"caf\xe9","type":"VIDEO"}\n'                              # 11 not UTF-8
    s = expect(post(n, data, lib), 200)
    assert (s["created"], s["rejected"], s["rows"]) == (2, 8, 10), s
    by_line = {r["line"]: r["reason"] for r in s["rejections"]}
    assert sorted(by_line) == [2, 5, 6, 7, 8, 9, 10, 11], s["rejections"]
    assert "COMIC" in by_line[2], by_line
    assert "duplicate" in by_line[5] and "line 4" in by_line[5], by_line
    assert "title" in by_line[7] and "500" in by_line[7], by_line
    assert "isbn" in by_line[9], by_line
    assert "UTF-8" in by_line[11], by_line
    expect(n.request("GET", "/v1/resources/" + good, token=lib), 200)
    first = expect(n.request("GET", "/v1/resources/" + dup, token=lib), 200)
    assert first["title"] == "First", first


def test_lowering_copies_below_the_lent_ones_is_a_rejected_row():
    n = node()
    lib = n.librarian()
    rid = uid()
    expect(post(n, jsonl([{"id": rid, "title": "Lent", "type": "FICTION", "copies": 2}]), lib), 200)
    user, mtok = n.member()
    other_user, _ = n.member()
    expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=mtok), 201)
    expect(n.request("POST", "/v1/loans", {"resource_id": rid, "user_id": other_user["id"]},
                     token=lib), 201)
    other = uid()
    s = expect(post(n, jsonl([{"id": other, "title": "Other", "type": "FICTION"},
                              {"id": rid, "title": "Lent", "type": "FICTION", "copies": 1}]),
                    lib), 200)
    assert (s["created"], s["rejected"]) == (1, 1), s
    assert s["rejections"][0]["line"] == 2 and s["rejections"][0]["id"] == rid, s
    assert "lent" in s["rejections"][0]["reason"], s
    assert expect(n.request("GET", "/v1/resources/" + rid, token=lib), 200)["copies"] == 2


def test_files_refused_as_a_whole():
    n = node()
    lib = n.librarian()
    broken = b'[\n{"contentId":"%s","title":"A","contentType":"FANTASY"}\n{"contentId":' % \
        uid().encode()
    r = post(n, broken, lib)
    expect(r, 422, "validation")
    assert "line 3" in r.body["detail"], r.body
    expect(post(n, "id,title\n".encode("utf-16"), lib), 422, "validation")
    expect(post(n, b"   \n", lib), 422, "validation")
    r = post(n, b"id,title,type,colour\n", lib)
    expect(r, 422, "validation")
    assert "colour" in r.body["detail"], r.body
    expect(post(n, b"id,title,type\n", lib, "?format=xml"), 422, "validation", "format")
    # a JSON Lines file read as CSV: its header is not ours
    expect(post(n, jsonl([{"id": uid(), "title": "x", "type": "AUDIO"}]), lib, "?format=csv"),
           422, "validation")
    # nothing was recorded for refused files
    assert counts(n, lib)  # the node still answers


def test_roles_and_size_limit():
    n = Node(name="import-limits", config={"limits": {"max_import_bytes": 4096}})
    try:
        data = jsonl([{"id": uid(), "title": "Small", "type": "AUDIO"}])
        expect(n.request("POST", "/v1/imports", data, headers=OCTET), 401)
        _, mtok = n.member()
        expect(post(n, data, mtok), 403, "forbidden")
        adm = n.admin()
        key = expect(n.request("POST", "/v1/api-keys", {"name": "library-module", "role": "service"},
                               token=adm), 201)["key"]
        r = n.request("POST", "/v1/imports", data, api_key=key, headers=OCTET)
        assert expect(r, 200)["created"] == 1, r
        big = jsonl([{"id": uid(), "title": "Big %d" % i, "type": "AUDIO"} for i in range(100)])
        assert len(big) > 4096
        expect(post(n, big, n.librarian()), 413, "payload-too-large")
        # over twice the limit evhttp refuses it while it arrives: still an answer, not a reset
        huge = post(n, b"x" * (64 * 4096), n.librarian())
        assert huge.status == 413, huge
    finally:
        n.stop()


def test_an_import_killed_halfway_completes_when_sent_again():
    n = Node(name="import-kill")
    try:
        lib = n.librarian()
        # rows are applied in id order, the first command alone and the rest in large
        # transactions: the file is large enough that the kill, at the first rows seen, lands
        # well inside the next one
        total = 300000
        data = jsonl([{"id": str(uid()), "title": "Row %06d" % i, "type": "SCHOLARLY_JOURNAL",
                       "copies": 1 + i % 3} for i in range(total)])
        import threading
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", _try_post(n, data, lib)))
        t.start()
        harness.poll(lambda: counts(n, lib)["SCHOLARLY_JOURNAL"] > 0, timeout=60, interval=0.002,
                     what="the first rows of the import")
        n.kill9()
        t.join(60)
        n.restart()
        landed = counts(n, lib)["SCHOLARLY_JOURNAL"]
        print("    killed with %d of %d rows applied" % (landed, total))
        assert 0 < landed < total, landed
        s = expect(post(n, data, lib, timeout=300), 200)
        assert s["duplicate"] is False, s
        assert (s["created"] + s["unchanged"], s["updated"], s["rejected"]) == (total, 0, 0), s
        assert s["unchanged"] == landed, (s, landed)
        assert counts(n, lib)["SCHOLARLY_JOURNAL"] == total
        again = expect(post(n, data, lib), 200)
        assert again["duplicate"] is True and again["created"] == s["created"], again
    finally:
        n.stop()


def _try_post(n, data, token):
    try:
        return post(n, data, token, timeout=300)
    except OSError as e:  # the node was killed under the request
        return e


def test_import_through_a_follower_reaches_every_node():
    import cluster
    c = cluster.Cluster(3, name="imp", raft=cluster.FAST_RAFT)
    try:
        f = c.followers()[0]
        data = open(SAMPLE, "rb").read()
        s = expect(post(f, data, c.lib_token, "?name=sample.json"), 200)
        assert (s["created"], s["duplicate"]) == (6, False), s
        # the follower answered after applying it itself: its own counts already show it
        got = counts(f, c.lib_token)
        assert (got["FANTASY"], got["POETRY"], got["NONFICTION"]) == (3, 1, 2), got
        # the same file at the leader is a duplicate (the record is replicated state)
        again = expect(post(c.leader(), data, c.lib_token), 200)
        assert again["duplicate"] is True and again["sha256"] == s["sha256"], again
        c.wait_converged()
        d = c.digests()
        assert len({v["digest"] for v in d.values()}) == 1, d
    finally:
        c.stop()
