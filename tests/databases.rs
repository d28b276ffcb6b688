//! The real database servers the rotation tests use (issue 17), as `tests/support/databases.rs` starts them:
//! PostgreSQL, MariaDB and Redis from Debian's packages on loopback, each with an administrator that can change
//! another user's password — after which that user's old password is refused and the new one works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::databases::{Database, Kind};

/// The statements that create `user` with `password` and change it, in each server's own terms (PostgreSQL
/// `CREATE ROLE`/`ALTER ROLE ... PASSWORD`, MariaDB `CREATE USER`/`ALTER USER ... IDENTIFIED BY`, Redis
/// `ACL SETUSER ... resetpass >password`).
fn create(kind: Kind, user: &str, password: &str) -> String {
    match kind {
        Kind::Postgres => format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        Kind::MariaDb => format!("CREATE USER {user}@'%' IDENTIFIED BY '{password}'"),
        Kind::Redis => format!("ACL SETUSER {user} on >{password} ~* &* +@all"),
    }
}

fn change(kind: Kind, user: &str, password: &str) -> String {
    match kind {
        Kind::Postgres => format!("ALTER ROLE {user} PASSWORD '{password}'"),
        Kind::MariaDb => format!("ALTER USER {user}@'%' IDENTIFIED BY '{password}'"),
        Kind::Redis => format!("ACL SETUSER {user} resetpass >{password}"),
    }
}

fn who(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => "SELECT current_user",
        Kind::MariaDb => "SELECT current_user()",
        Kind::Redis => "ACL WHOAMI",
    }
}

fn a_password_change_refuses_the_old_and_takes_the_new(db: &Database) {
    let kind = db.kind;
    let (admin, pw) = (&db.admin, &db.admin_password);
    assert!(
        db.query(admin, "wrong", who(kind)).is_err(),
        "{kind:?}: a wrong password is refused"
    );
    db.query(admin, pw, &create(kind, "app_1", "old-pw")).unwrap();
    let me = db.query("app_1", "old-pw", who(kind)).unwrap();
    assert!(me.starts_with("app_1"), "{kind:?}: {me}");
    db.query(admin, pw, &change(kind, "app_1", "new-pw")).unwrap();
    let refused = db.query("app_1", "old-pw", who(kind)).unwrap_err();
    assert!(
        !refused.is_empty(),
        "{kind:?}: the old password is refused with a message"
    );
    assert!(db.query("app_1", "new-pw", who(kind)).unwrap().starts_with("app_1"));
}

#[test]
fn postgres_on_loopback() {
    a_password_change_refuses_the_old_and_takes_the_new(&Database::postgres());
}

#[test]
fn mariadb_on_loopback() {
    a_password_change_refuses_the_old_and_takes_the_new(&Database::mariadb());
}

#[test]
fn redis_on_loopback() {
    a_password_change_refuses_the_old_and_takes_the_new(&Database::redis());
}
