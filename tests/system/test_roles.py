"""Role matrix: members, librarians, admins, API keys, reports."""

import datetime

from harness import Lazy, expect, is_uuid, parse_time, uid

node = Lazy(name="roles")


def _setup_two_members_with_loan(n):
    a, atok = n.member("A")
    b, btok = n.member("B")
    res = n.create_resource(n.librarian(), copies=2)
    loan = expect(n.request("POST", "/v1/loans", {"resource_id": res["id"]}, token=atok), 201)
    return a, atok, b, btok, res, loan


def test_member_cannot_see_others():
    n = node()
    a, atok, b, btok, res, loan = _setup_two_members_with_loan(n)
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=btok), 404, "not-found")
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=btok), 404, "not-found")
    expect(n.request("GET", "/v1/users/" + a["id"], token=btok), 404, "not-found")
    expect(n.request("GET", "/v1/users/%s/loans" % a["id"], token=btok), 404, "not-found")
    # the other member's failed attempts changed nothing
    l = expect(n.request("GET", "/v1/users/%s/loans" % a["id"], token=atok), 200)["items"]
    assert [(x["id"], x["status"], x["renewals"]) for x in l] == [(loan["id"], "active", 0)], l
    # self access works
    me = expect(n.request("GET", "/v1/users/" + a["id"], token=atok), 200)
    assert me["id"] == a["id"] and me["email"] == a["email"], me
    # unknown user id: 404 for everyone
    expect(n.request("GET", "/v1/users/" + uid(), token=n.librarian()), 404, "not-found")


def test_librarian_and_admin_see_members():
    n = node()
    a, atok, b, btok, res, loan = _setup_two_members_with_loan(n)
    for tok in (n.librarian(), n.admin()):
        u = expect(n.request("GET", "/v1/users/" + a["id"], token=tok), 200)
        assert u["id"] == a["id"] and u["role"] == "member", u
        l = expect(n.request("GET", "/v1/users/%s/loans" % a["id"], token=tok), 200)["items"]
        assert [x["id"] for x in l] == [loan["id"]], l
        l = expect(n.request("GET", "/v1/users/%s/loans?status=returned" % a["id"], token=tok), 200)["items"]
        assert l == [], l
    # a librarian may renew and return a member's loan
    lib = n.librarian()
    r = expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=lib), 200)
    assert r["renewals"] == 1, r
    r = expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=lib), 200)
    assert r["status"] == "returned", r


def test_member_cannot_write_catalog_or_users():
    n = node()
    a, atok, b, btok, res, loan = _setup_two_members_with_loan(n)
    expect(n.request("POST", "/v1/resources", {"title": "x", "type": "FICTION"}, token=atok), 403, "forbidden")
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"name": "Me"}, token=atok), 403, "forbidden")
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"role": "admin"}, token=atok), 403, "forbidden")
    expect(n.request("PATCH", "/v1/users/" + b["id"], {"status": "blocked"}, token=atok), 404, "not-found")
    u = expect(n.request("GET", "/v1/me", token=atok), 200)
    assert (u["role"], u["name"]) == ("member", "A"), u
    assert expect(n.request("GET", "/v1/me", token=btok), 200)["status"] == "active"


def test_librarian_blocks_but_cannot_change_role_or_plan():
    n = node()
    a, atok = n.member("A")
    lib = n.librarian()
    u = expect(n.request("PATCH", "/v1/users/" + a["id"], {"status": "blocked"}, token=lib), 200)
    assert u["status"] == "blocked", u
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"role": "librarian"}, token=lib), 403, "forbidden")
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"plan": "premium"}, token=lib), 403, "forbidden")
    u = expect(n.request("GET", "/v1/users/" + a["id"], token=lib), 200)
    assert (u["role"], u["plan"], u["status"]) == ("member", "standard", "blocked"), u
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"status": "frozen"}, token=lib), 422, "validation", "status")
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"status": "active"}, token=lib), 200)


def test_admin_changes_role_and_plan():
    n = node()
    a, atok = n.member("A")
    adm = n.admin()
    u = expect(n.request("PATCH", "/v1/users/" + a["id"], {"plan": "premium", "name": "Anna"}, token=adm), 200)
    assert (u["plan"], u["name"]) == ("premium", "Anna"), u
    # as a member the user cannot create resources ...
    expect(n.request("POST", "/v1/resources", {"title": "x", "type": "FICTION"}, token=atok), 403, "forbidden")
    u = expect(n.request("PATCH", "/v1/users/" + a["id"], {"role": "librarian"}, token=adm), 200)
    assert u["role"] == "librarian", u
    # ... the stored role overrides the token's claim at once
    expect(n.request("POST", "/v1/resources", {"title": "x", "type": "FICTION"}, token=atok), 201)
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"role": "superuser"}, token=adm), 422, "validation", "role")
    expect(n.request("PATCH", "/v1/users/" + a["id"], {"role": "member"}, token=adm), 200)
    expect(n.request("POST", "/v1/resources", {"title": "x", "type": "FICTION"}, token=atok), 403, "forbidden")


def test_api_keys():
    n = node()
    adm = n.admin()
    r = n.request("POST", "/v1/api-keys", {"name": "catalog-sync", "role": "librarian"}, token=adm)
    k = expect(r, 201)
    assert is_uuid(k["id"]) and k["name"] == "catalog-sync" and k["role"] == "librarian", k
    assert isinstance(k["key"], str) and len(k["key"]) >= 16, k
    parse_time(k["created_at"])
    res = expect(n.request("POST", "/v1/resources", {"title": "via key", "type": "AUDIO"}, api_key=k["key"]), 201)
    assert res["title"] == "via key"
    expect(n.request("GET", "/v1/reports/overdue", api_key=k["key"]), 200)
    expect(n.request("POST", "/v1/api-keys", {"name": "x", "role": "service"}, api_key=k["key"]), 403, "forbidden")
    svc = expect(n.request("POST", "/v1/api-keys", {"name": "svc", "role": "service"}, token=adm), 201)
    assert svc["key"] != k["key"]
    expect(n.request("GET", "/v1/reports/top-resources", api_key=svc["key"]), 200)
    # wrong keys
    expect(n.request("GET", "/v1/resources/counts", api_key=k["key"] + "x"), 401, "unauthorized")
    # non-admins cannot mint keys
    _, mtok = n.member()
    expect(n.request("POST", "/v1/api-keys", {"name": "x", "role": "service"}, token=mtok), 403, "forbidden")
    expect(n.request("POST", "/v1/api-keys", {"name": "x", "role": "service"}, token=n.librarian()),
           403, "forbidden")
    # validation
    expect(n.request("POST", "/v1/api-keys", {"name": "x", "role": "admin"}, token=adm), 422, "validation", "role")
    expect(n.request("POST", "/v1/api-keys", {"name": "", "role": "service"}, token=adm), 422, "validation", "name")
    expect(n.request("POST", "/v1/api-keys", {"name": "n" * 101, "role": "service"}, token=adm),
           422, "validation", "name")


def _csv_ok(r, header):
    assert r.status == 200, r
    assert r.ctype == "text/csv", "content-type %r" % r.ctype
    text = r.raw.decode()
    lines = text.splitlines()
    assert lines and lines[0] == header, "csv header %r" % (lines[:1],)
    return [l.split(",") for l in lines[1:] if l]


def test_reports():
    n = node()
    a, atok, b, btok, res, loan = _setup_two_members_with_loan(n)
    expect(n.request("POST", "/v1/loans", {"resource_id": res["id"]}, token=btok), 201)
    lib = n.librarian()
    today = parse_time(loan["checked_out_at"]).date().isoformat()

    b1 = expect(n.request("GET", "/v1/reports/overdue", token=lib), 200)
    assert isinstance(b1["items"], list), b1
    assert loan["id"] not in {x["loan_id"] for x in b1["items"]}, "a fresh loan is not overdue"
    _csv_ok(n.request("GET", "/v1/reports/overdue?format=csv", token=lib),
            "loan_id,user_id,resource_id,due_at,days_overdue")
    _csv_ok(n.request("GET", "/v1/reports/overdue", token=lib, headers={"Accept": "text/csv"}),
            "loan_id,user_id,resource_id,due_at,days_overdue")

    days = expect(n.request("GET", "/v1/reports/loans-per-day", token=lib), 200)["items"]
    d = [x for x in days if x["day"] == today]
    assert len(d) == 1 and d[0]["checkouts"] >= 2 and isinstance(d[0]["returns"], int), (today, days)
    rows = _csv_ok(n.request("GET", "/v1/reports/loans-per-day?format=csv", token=lib), "day,checkouts,returns")
    assert [r for r in rows if r[0] == today and int(r[1]) == d[0]["checkouts"]], rows

    top = expect(n.request("GET", "/v1/reports/top-resources?limit=100", token=lib), 200)["items"]
    mine = [x for x in top if x["resource_id"] == res["id"]]
    assert len(mine) == 1 and mine[0]["checkouts"] == 2 and mine[0]["title"] == res["title"], (mine, top[:5])
    assert [x["checkouts"] for x in top] == sorted([x["checkouts"] for x in top], reverse=True), top
    one = expect(n.request("GET", "/v1/reports/top-resources?limit=1", token=lib), 200)["items"]
    assert len(one) == 1, one
    rows = _csv_ok(n.request("GET", "/v1/reports/top-resources?limit=100&format=csv", token=lib),
                   "resource_id,title,checkouts")
    assert any(r[0] == res["id"] for r in rows), rows

    for path in ("/v1/reports/overdue", "/v1/reports/loans-per-day", "/v1/reports/top-resources",
                 "/v1/reports/overdue?format=csv"):
        expect(n.request("GET", path, token=atok), 403, "forbidden")
        expect(n.request("GET", path, token=n.admin()), 200)
