"""Catalog: create/get/list/paginate/count/PUT/DELETE and validation."""

import urllib.parse

from harness import Lazy, TYPES, expect, is_uuid, parse_time, uid

node = Lazy(name="catalog")


def _lib(n):
    return n.librarian()


def test_create_and_get():
    n = node()
    lib = _lib(n)
    body = {"title": "The Left Hand of Darkness", "type": "FANTASY", "copies": 4, "premium": True,
            "authors": ["Ursula K. Le Guin"], "tags": ["classic", "sf"]}
    r = n.request("POST", "/v1/resources", body, token=lib)
    res = expect(r, 201)
    assert r.ctype == "application/json"
    assert is_uuid(res["id"]), res
    for k, v in body.items():
        assert res[k] == v, "%s: %r != %r" % (k, res[k], v)
    assert res["available"] == 4, res
    parse_time(res["created_at"])
    parse_time(res["updated_at"])
    _, mtok = n.member()
    got = expect(n.request("GET", "/v1/resources/" + res["id"], token=mtok), 200)
    assert got == res, (got, res)
    # defaults
    d = n.create_resource(lib, title="Defaults", type="AUDIO")
    assert (d["copies"], d["available"], d["premium"], d["authors"], d["tags"]) == (1, 1, False, [], []), d


def test_member_cannot_create_403():
    n = node()
    _, mtok = n.member()
    r = n.request("POST", "/v1/resources", {"title": "x", "type": "FICTION"}, token=mtok)
    expect(r, 403, "forbidden")
    expect(n.request("PUT", "/v1/resources/" + uid(), {"title": "x", "type": "FICTION"}, token=mtok),
           403, "forbidden")
    res = n.create_resource(_lib(n))
    expect(n.request("DELETE", "/v1/resources/" + res["id"], token=mtok), 403, "forbidden")
    expect(n.request("GET", "/v1/resources/" + res["id"], token=mtok), 200)


def test_list_type_filter_and_pagination():
    n = node()
    lib = _lib(n)
    mine = set()
    for i in range(25):
        mine.add(n.create_resource(lib, title="Page %02d" % i, type="POETRY")["id"])
    n.create_resource(lib, title="Other", type="HISTORY")
    # type filter: only POETRY, includes all of mine
    items = n.list_all_resources(lib, rtype="POETRY")
    assert all(it["type"] == "POETRY" for it in items), [it["type"] for it in items]
    assert mine <= {it["id"] for it in items}
    # cursor pagination over everything with limit 10
    counts = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    total = sum(counts.values())
    seen, cursor, pages = [], None, 0
    while True:
        q = {"limit": "10"}
        if cursor:
            q["cursor"] = cursor
        b = expect(n.request("GET", "/v1/resources?" + urllib.parse.urlencode(q), token=lib), 200)
        pages += 1
        assert len(b["items"]) <= 10, len(b["items"])
        assert "next_cursor" in b, b.keys()
        seen += [it["id"] for it in b["items"]]
        cursor = b["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor, cursor
        assert len(b["items"]) == 10, "short page %d with a next_cursor" % len(b["items"])
        assert pages < 1000
    assert len(seen) == len(set(seen)), "an item was returned twice"
    assert len(seen) == total, "paginated %d items, counts say %d" % (len(seen), total)
    assert seen == sorted(seen), "not ordered by id"
    assert mine <= set(seen)
    assert pages <= total // 10 + 2, pages
    # type-filtered pagination with a small limit
    ids, cursor = [], None
    while True:
        q = {"type": "POETRY", "limit": "7"}
        if cursor:
            q["cursor"] = cursor
        b = expect(n.request("GET", "/v1/resources?" + urllib.parse.urlencode(q), token=lib), 200)
        ids += [it["id"] for it in b["items"]]
        assert all(it["type"] == "POETRY" for it in b["items"])
        cursor = b["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) == counts["POETRY"], (len(ids), counts["POETRY"])
    # default limit is 50
    b = expect(n.request("GET", "/v1/resources", token=lib), 200)
    assert len(b["items"]) == min(50, total), len(b["items"])


def test_list_bad_params_422():
    n = node()
    lib = _lib(n)
    for q, field in (("type=COMIC", "type"), ("limit=0", "limit"), ("limit=201", "limit"),
                     ("limit=abc", "limit"), ("cursor=zzzz-not-a-cursor", "cursor")):
        expect(n.request("GET", "/v1/resources?" + q, token=lib), 422, "validation", field)
    expect(n.request("GET", "/v1/resources?limit=200", token=lib), 200)


def test_counts_by_type():
    n = node()
    lib = _lib(n)
    c0 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    assert set(c0) == set(TYPES), sorted(c0)
    assert all(isinstance(v, int) and v >= 0 for v in c0.values()), c0
    add = {"VIDEO": 3, "SCHOLARLY_JOURNAL": 2, "NONFICTION": 1}
    for t, k in add.items():
        for _ in range(k):
            n.create_resource(lib, type=t)
    c1 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    for t in TYPES:
        assert c1[t] == c0[t] + add.get(t, 0), "%s: %d -> %d" % (t, c0[t], c1[t])


def test_put_create_and_replace():
    n = node()
    lib = _lib(n)
    rid = uid()
    r = n.request("PUT", "/v1/resources/" + rid, {"title": "First", "type": "HISTORY", "copies": 2}, token=lib)
    b = expect(r, 201)
    assert b["id"] == rid and b["title"] == "First" and b["copies"] == 2 and b["available"] == 2, b
    r = n.request("PUT", "/v1/resources/" + rid,
                  {"title": "Second", "type": "FICTION", "copies": 5, "tags": ["t"]}, token=lib)
    b = expect(r, 200)
    assert (b["id"], b["title"], b["type"], b["copies"], b["available"], b["tags"]) == \
        (rid, "Second", "FICTION", 5, 5, ["t"]), b
    got = n.get_resource(rid, lib)
    assert got["title"] == "Second" and got["type"] == "FICTION", got
    assert parse_time(got["updated_at"]) >= parse_time(got["created_at"])
    # PUT does not take an id in the body
    expect(n.request("PUT", "/v1/resources/" + rid, {"id": rid, "title": "x", "type": "FICTION"}, token=lib),
           (400, 422), "validation", "id")


def test_delete():
    n = node()
    lib = _lib(n)
    res = n.create_resource(lib)
    r = n.request("DELETE", "/v1/resources/" + res["id"], token=lib)
    expect(r, 204)
    assert r.raw == b"", r.raw
    expect(n.request("GET", "/v1/resources/" + res["id"], token=lib), 404, "not-found")
    expect(n.request("DELETE", "/v1/resources/" + res["id"], token=lib), 404, "not-found")
    assert res["id"] not in {it["id"] for it in n.list_all_resources(lib)}


def test_get_missing_and_malformed_404():
    n = node()
    lib = _lib(n)
    expect(n.request("GET", "/v1/resources/" + uid(), token=lib), 404, "not-found")
    expect(n.request("GET", "/v1/resources/not-a-uuid", token=lib), 404, "not-found")


def test_create_validation_names_field():
    n = node()
    lib = _lib(n)
    base = {"title": "T", "type": "FICTION"}
    cases = [
        ({"type": "FICTION"}, 422, "title"),
        ({"title": "T"}, 422, "type"),
        (dict(base, title=""), 422, "title"),
        (dict(base, title="x" * 501), 422, "title"),
        (dict(base, title=7), 422, "title"),
        (dict(base, type="COMIC"), 422, "type"),
        (dict(base, type="fiction"), 422, "type"),
        (dict(base, copies=-1), 422, "copies"),
        (dict(base, copies=100001), 422, "copies"),
        (dict(base, copies="3"), 422, "copies"),
        (dict(base, copies=1.5), 422, "copies"),
        (dict(base, premium="yes"), 422, "premium"),
        (dict(base, authors="Someone"), 422, "authors"),
        (dict(base, authors=["a"] * 51), 422, "authors"),
        (dict(base, authors=[""]), 422, "authors"),
        (dict(base, authors=["a" * 201]), 422, "authors"),
        (dict(base, tags=["t" * 101]), 422, "tags"),
        (dict(base, tags=[1]), 422, "tags"),
        (dict(base, id="not-a-uuid"), 422, "id"),
        (dict(base, colour="red"), 400, "colour"),
    ]
    c0 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    for body, status, field in cases:
        r = n.request("POST", "/v1/resources", body, token=lib)
        try:
            expect(r, status, "validation", field)
        except AssertionError as e:
            raise AssertionError("body %r: %s" % (body, e))
    # boundaries accepted
    n.create_resource(lib, title="x" * 500, copies=100000, authors=["a" * 200] * 50, tags=["t" * 100] * 50)
    n.create_resource(lib, copies=0)
    c1 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    assert sum(c1.values()) == sum(c0.values()) + 2, "a rejected create took effect"


def test_id_kept_and_duplicate_409():
    n = node()
    lib = _lib(n)
    rid = uid()
    res = n.create_resource(lib, id=rid, title="Imported")
    assert res["id"] == rid, res
    assert n.get_resource(rid, lib)["title"] == "Imported"
    r = n.request("POST", "/v1/resources", {"id": rid, "title": "Again", "type": "FICTION"}, token=lib)
    expect(r, 409, "conflict")
    assert n.get_resource(rid, lib)["title"] == "Imported"
    # uppercase form of the same uuid is the same resource (ids are lowercase)
    r = n.request("POST", "/v1/resources", {"id": rid.upper(), "title": "Again", "type": "FICTION"}, token=lib)
    expect(r, (409, 422))


def test_copies_reduction_conflict_and_delete_with_loans():
    n = node()
    lib = _lib(n)
    res = n.create_resource(lib, copies=3, title="Popular")
    rid = res["id"]
    loans = []
    for _ in range(3):
        _, mt = n.member()
        r = n.request("POST", "/v1/loans", {"resource_id": rid}, token=mt)
        loans.append((expect(r, 201), mt))
    assert sorted(l["copy"] for l, _ in loans) == [1, 2, 3], [l["copy"] for l, _ in loans]
    assert n.get_resource(rid, lib)["available"] == 0
    r = n.request("PUT", "/v1/resources/" + rid, {"title": "Popular", "type": "FICTION", "copies": 2}, token=lib)
    expect(r, 409, "conflict")
    assert n.get_resource(rid, lib)["copies"] == 3
    expect(n.request("DELETE", "/v1/resources/" + rid, token=lib), 409, "conflict")
    # increasing is fine and adds availability
    b = expect(n.request("PUT", "/v1/resources/" + rid,
                         {"title": "Popular", "type": "FICTION", "copies": 4}, token=lib), 200)
    assert (b["copies"], b["available"]) == (4, 1), b
    for l, mt in loans:
        expect(n.request("POST", "/v1/loans/%s/return" % l["id"], token=mt), 200)
    b = expect(n.request("PUT", "/v1/resources/" + rid,
                         {"title": "Popular", "type": "FICTION", "copies": 1}, token=lib), 200)
    assert (b["copies"], b["available"]) == (1, 1), b
    expect(n.request("DELETE", "/v1/resources/" + rid, token=lib), 204)
