//! keyward's database clients (`keyward::database`, issue 17) against real servers (`support::databases`):
//! a managing user changes another user's password, after which the old one is refused and the new one works;
//! each refusal and absence is the error that names it, and no password appears in any error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use keyward::database::{self, Credential, DatabaseError, Endpoint, Kind};
use keyward::secret::SecretBytes;
use support::databases::Database;

/// A value that must never appear in an error.
const CANARY: &str = "canary-7f3e9b21-do-not-print";

fn credential(user: &str, password: &str) -> Credential {
    Credential {
        username: user.to_string(),
        password: SecretBytes::new(password.as_bytes().to_vec()),
    }
}

fn postgres() -> (Database, Endpoint, Credential) {
    let db = Database::postgres();
    // A managing role as ESC's postgres rotator documents it: CREATEROLE, and ADMIN OPTION on the users it
    // rotates (required from PostgreSQL 16).
    // Every statement logged: the test looks for the password in the server's log.
    for statement in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
        "CREATE ROLE manager LOGIN CREATEROLE PASSWORD 'manager-pw'",
        "CREATE ROLE app_1 LOGIN PASSWORD 'first-pw'",
        "GRANT app_1 TO manager WITH ADMIN OPTION",
    ] {
        db.query(&db.admin, &db.admin_password, statement).unwrap();
    }
    let endpoint = Endpoint {
        kind: Kind::Postgres,
        host: "127.0.0.1".into(),
        port: db.port,
        database: None,
    };
    (db, endpoint, credential("manager", "manager-pw"))
}

fn no_canary(e: &DatabaseError) {
    assert!(!e.to_string().contains(CANARY), "{e}");
    assert!(!format!("{e:?}").contains(CANARY), "{e:?}");
}

#[tokio::test]
async fn postgres_a_changed_password_refuses_the_old_and_takes_the_new() {
    let (db, endpoint, manager) = postgres();
    let new = SecretBytes::new(b"second-pw-with-'quote-and-\\".to_vec());
    database::set_password(&endpoint, &manager, "app_1", &new)
        .await
        .unwrap();
    let refused = database::login(&endpoint, &credential("app_1", "first-pw"))
        .await
        .unwrap_err();
    assert_eq!(refused.category(), "login_refused", "{refused}");
    database::login(
        &endpoint,
        &Credential {
            username: "app_1".into(),
            password: new,
        },
    )
    .await
    .unwrap();
    // The server was sent a verifier, not the password: its log and catalog never hold it.
    let stored = db
        .query(
            &db.admin,
            &db.admin_password,
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_1'",
        )
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let log = db.logs();
    assert!(log.contains("ALTER ROLE"), "statements are logged");
    assert!(!log.contains("second-pw"), "{log}");
}

#[tokio::test]
async fn postgres_refusals_are_named_and_hold_no_password() {
    let (db, endpoint, _) = postgres();
    let canary = SecretBytes::new(CANARY.as_bytes().to_vec());

    let e = database::set_password(&endpoint, &credential("manager", CANARY), "app_1", &canary)
        .await
        .unwrap_err();
    assert_eq!(
        (e.category(), e.reason()),
        ("manager_refused", "ManagingCredentialRefused")
    );
    no_canary(&e);

    let e = database::set_password(&endpoint, &credential("manager", "manager-pw"), "nobody", &canary)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "user_missing", "{e}");
    no_canary(&e);

    // A manager without ADMIN OPTION on a superuser may not change it.
    let e = database::set_password(&endpoint, &credential("manager", "manager-pw"), "postgres", &canary)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "permission_denied", "{e}");
    no_canary(&e);
    assert_eq!(
        db.query(&db.admin, &db.admin_password, "SELECT 1").unwrap(),
        "1",
        "the administrator's password is unchanged"
    );

    // Nothing listens: unreachable, transient.
    drop(db);
    let e = database::login(&endpoint, &credential("app_1", CANARY))
        .await
        .unwrap_err();
    assert_eq!(e.category(), "unreachable", "{e}");
    assert!(e.is_transient());
    no_canary(&e);
}
