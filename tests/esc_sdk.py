"""Drives the local ESC server with the official Python client, pulumi-esc-sdk (run by tests/esc_sdk.rs).

Usage: python esc_sdk.py SERVER_ROOT_URL TOKEN
The SDK replaces the path of its host with /api/esc itself, so the server's root URL is what it is given.
"""

import sys

import pulumi_esc_sdk as esc

CANARY = "canary-sdk-5e1f-secret"
ORG, PROJECT, ENV = "keyward-test", "sdk", "demo"

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def main():
    host, token = sys.argv[1], sys.argv[2]
    client = esc.EscClient(esc.Configuration(host=host, access_token=token))

    # A wrong token is refused.
    bad = esc.EscClient(esc.Configuration(host=host, access_token="not-the-token"))
    try:
        bad.list_environments(ORG)
        check(False, "a wrong token must be refused")
    except esc.ApiException as e:
        check(e.status == 401, f"wrong token: status {e.status}")

    # Create, and a second create conflicts.
    client.create_environment(ORG, "base", "shared")
    client.create_environment(ORG, PROJECT, ENV)
    try:
        client.create_environment(ORG, PROJECT, ENV)
        check(False, "creating an existing environment must fail")
    except esc.ApiException as e:
        check(e.status == 409, f"duplicate create: status {e.status}")

    client.update_environment_yaml(ORG, "base", "shared", "values:\n  region: us-east-1\n")
    definition = (
        "# the demo environment\n"
        "imports:\n"
        "  - base/shared\n"
        "values:\n"
        "  db:\n"
        "    user: app\n"
        "    password:\n"
        f"      fn::secret: {CANARY}\n"
        "  url: postgres://${db.user}:${db.password}@db/${region}\n"
        "  environmentVariables:\n"
        "    DB_PASSWORD: ${db.password}\n"
    )
    diags = client.update_environment_yaml(ORG, PROJECT, ENV, definition)
    check(not diags.diagnostics, f"update diagnostics: {diags}")

    # Listing.
    envs = client.list_environments(ORG)
    names = sorted(f"{e.project}/{e.name}" for e in envs.environments)
    check(names == ["base/shared", "sdk/demo"], f"list: {names}")
    check(all(e.organization == ORG and e.created and e.modified for e in envs.environments), "list fields")

    # The stored definition has the secret only as ciphertext.
    _, raw = client.get_environment(ORG, PROJECT, ENV)
    text = raw.decode("utf-8")
    check(CANARY not in text, "the definition must not show the plaintext")
    check("ciphertext" in text and text.startswith("# the demo environment\n"), f"definition: {text}")

    # ETag and revision headers.
    # (HTTP header names are case-insensitive; the SDK hands them over as a plain dict.)
    head = client.esc_api.get_environment_e_tag_with_http_info(ORG, PROJECT, ENV)
    headers = {k.lower(): v for k, v in head.headers.items()}
    check(headers.get("etag"), f"HEAD has an ETag: {headers}")
    check(headers.get("pulumi-esc-revision") == "2", f"HEAD revision: {headers}")

    # Revisions, newest first.
    revisions = client.list_environment_revisions(ORG, PROJECT, ENV)
    check([r.number for r in revisions] == [2, 1], f"revisions: {revisions}")
    check("latest" in (revisions[0].tags or []), f"latest tag: {revisions[0]}")

    # Open and read: whole, then properties (the SDK uses the spec's open//{id}?property= path).
    env, values, raw = client.open_and_read_environment(ORG, PROJECT, ENV)
    check(values["db"]["password"] == CANARY, f"open and read: {values}")
    check(values["url"] == f"postgres://app:{CANARY}@db/us-east-1", f"interpolation: {values['url']}")
    check(values["region"] == "us-east-1", "imported value")
    check(env.properties["url"].secret is True, "interpolating a secret makes a secret")
    opened = client.open_environment(ORG, PROJECT, ENV)
    v, value = client.read_open_environment_property(ORG, PROJECT, ENV, opened.id, "db.password")
    check(value == CANARY and v.secret is True, f"property: {v}")
    v, value = client.read_open_environment_property(ORG, PROJECT, ENV, opened.id, "environmentVariables.DB_PASSWORD")
    check(value == CANARY, f"property: {v}")
    try:
        client.read_open_environment_property(ORG, PROJECT, ENV, opened.id, "db.nope")
        check(False, "a missing property must be 404")
    except esc.ApiException as e:
        check(e.status == 404 and "db.nope" in (e.body or ""), f"missing property: {e.status} {e.body}")

    # A new revision, then reading the old one back by tag and by number.
    client.update_environment_yaml(ORG, PROJECT, ENV, definition.replace(CANARY, CANARY + "-v3"))
    client.create_environment_revision_tag(ORG, PROJECT, ENV, "stable", 2)
    tag = client.get_environment_revision_tag(ORG, PROJECT, ENV, "stable")
    check(tag.revision == 2 and tag.name == "stable", f"tag: {tag}")
    tags = client.list_environment_revision_tags(ORG, PROJECT, ENV)
    check(sorted(t.name for t in tags.tags) == ["latest", "stable"], f"tags: {tags}")
    _, values, _ = client.open_and_read_environment_at_version(ORG, PROJECT, ENV, "stable")
    check(values["db"]["password"] == CANARY, f"at tag: {values}")
    _, values, _ = client.open_and_read_environment_at_version(ORG, PROJECT, ENV, "3")
    check(values["db"]["password"] == CANARY + "-v3", f"at revision 3: {values}")
    _, raw = client.get_environment_at_version(ORG, PROJECT, ENV, "2")
    check(CANARY not in raw.decode("utf-8"), "an old revision keeps its secret encrypted")

    # Decrypt shows the plaintext definition.
    decrypted, raw = client.decrypt_environment(ORG, PROJECT, ENV)
    check(f"fn::secret: {CANARY}-v3" in raw, f"decrypt: {raw}")

    # Check a definition without storing it.
    checked = client.check_environment_yaml(ORG, "values:\n  a: ${b}\n  b: 1\n")
    check(not checked.diagnostics and checked.properties["a"].value == 1, f"check: {checked}")
    checked = client.check_environment_yaml(ORG, "values:\n  a: ${missing}\n")
    check(checked.diagnostics, f"check with an error: {checked}")

    # Environment tags.
    client.create_environment_tag(ORG, PROJECT, ENV, "owner", "platform")
    tags = client.list_environment_tags(ORG, PROJECT, ENV)
    check(tags.tags["owner"].value == "platform", f"environment tags: {tags}")

    # Delete.
    client.delete_environment(ORG, PROJECT, ENV)
    try:
        client.get_environment(ORG, PROJECT, ENV)
        check(False, "a deleted environment must be gone")
    except esc.ApiException as e:
        check(e.status == 404, f"after delete: {e.status}")

    print(f"esc_sdk.py: all {checks} checks passed")


if __name__ == "__main__":
    main()
