//! Prints a bbolt file's meta and every bucket's keys and values (escaped), with etcd's
//! snapshot status and HashKV: `cargo run -p oxcd-bbolt --example dump -- FILE`.

use oxcd_bbolt::etcd::{hash_kv_at, snapshot_status, store_revisions};
use oxcd_bbolt::Db;

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        return Err("usage: dump FILE".into());
    };
    let db = Db::open(&path)?;
    println!("meta: {:?}", db.meta());
    println!("hash trailer: {}", db.has_hash_trailer());
    for name in db.bucket_names()? {
        let bucket = db.must_bucket(&name)?;
        println!(
            "bucket {} (inline: {}, root: {:?})",
            show(&name),
            bucket.is_inline(),
            bucket.root_pgid()
        );
        let mut cursor = bucket.cursor();
        while let Some(e) = cursor.next_entry()? {
            println!("  {} = {}", show(e.key), show(e.value));
        }
    }
    println!("status: {:?}", snapshot_status(&db)?);
    if db.bucket(b"key")?.is_some() {
        println!("revisions: {:?}", store_revisions(&db)?);
        println!("hashkv: {:?}", hash_kv_at(&db, 0)?);
    }
    Ok(())
}
