//! Which parlor and which store format (issue 18): `parlor --version` names
//! both, and a data directory written in another store format stops the
//! daemon before it changes anything, with a message an operator can act on.

mod common;

use common::*;
use parlor::store::keys::{read_u64, u64_value, FORMAT_VERSION_KEY};
use parlor::store::FORMAT_VERSION;

#[test]
fn version_names_the_crate_version_and_the_store_format() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run parlor --version");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "parlor {} (store format {FORMAT_VERSION})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// What an older parlor meets after a newer one upgraded the store (a
/// package rolled back without restoring a backup): it must refuse, name
/// both formats and the backup command, and leave the store as it was.
#[test]
fn a_store_of_a_newer_format_stops_the_daemon_naming_both_formats_and_the_backup_command() {
    let server = Server::new();
    server.user_add("admin", "admin", "s3cret");
    let store = server.data_dir().join("store");
    let newer = FORMAT_VERSION + 1;
    {
        // Stands in for the newer parlor: the store's own format record.
        let db = sled::open(&store).expect("open the store with sled");
        db.insert(FORMAT_VERSION_KEY, &u64_value(newer))
            .expect("write the format");
        db.flush().expect("flush");
    }

    let out = server.cli(&["serve", "--listen", "127.0.0.1:0"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served a newer store: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "printed a listening line: {out:?}"
    );
    for want in [
        format!("format {newer}"),
        format!("only format {FORMAT_VERSION}"),
        "`parlor backup FILE`".to_owned(),
    ] {
        assert!(stderr.contains(&want), "no {want:?} in: {stderr}");
    }

    let db = sled::open(&store).expect("reopen the store with sled");
    let kept = db.get(FORMAT_VERSION_KEY).expect("read the format");
    assert_eq!(kept.as_deref().and_then(read_u64), Some(newer));
}
