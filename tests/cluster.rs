//! Many hosts, one bucket: the S3 side is a three-node Garage cluster on loopback ports that
//! keeps every object on all three nodes (`scripts/s3-server start --nodes 3`), as a storage
//! cluster behind many mounts would. Here: a storage node lost under load.

use std::fs;

use crate::common::*;

/// One of three storage nodes killed in the middle of a workload through a mount on another
/// node (files written and closed, renamed, a multipart upload, reads): no operation fails and
/// S3 holds exactly what was closed. With a second node down there is no quorum: a close
/// fails with `EIO` within the bound, and the mount works again once the nodes are back.
#[test]
fn a_storage_node_lost_under_load_fails_no_operation() {
    let s3 = PrivateS3::cluster("nodeloss", 3940, 3);
    let prefix = unique_prefix("nodeloss");
    let source = format!("{}:{prefix}", s3.env.bucket);
    let mut m = Mount::on(
        s3.env.clone(),
        &source,
        &prefix,
        &["--part-size", "5M"],
        &[],
    );
    let mut want = Vec::new();
    for i in 0..30u64 {
        if i == 10 {
            s3.kill_node(2);
        }
        let data = pseudo_random(20_000 + 997 * i as usize, i);
        let name = format!("f{i}");
        write_synced(&m.p(&name), &data).unwrap_or_else(|e| panic!("write {name}: {e}"));
        let name = if i % 3 == 0 {
            let moved = format!("g{i}");
            fs::rename(m.p(&name), m.p(&moved)).unwrap_or_else(|e| panic!("rename {name}: {e}"));
            moved
        } else {
            name
        };
        assert_eq!(fs::read(m.p(&name)).unwrap(), data, "{name}");
        want.push((name, data));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 3960)).is_err(),
        "node 2 is down"
    );
    let big = pseudo_random(11 << 20, 99);
    write_synced(&m.p("big.bin"), &big).unwrap();
    for (name, data) in &want {
        assert!(s3.env.stored(&format!("{prefix}{name}")) == *data, "{name}");
    }
    assert!(s3.env.stored(&format!("{prefix}big.bin")) == big);

    // Two of three down: no quorum. A close fails with EIO within the bound, the file's
    // data is kept, and once the nodes are back the mount works again.
    s3.kill_node(1);
    let started = std::time::Instant::now();
    let err = write_synced(&m.p("lost-quorum.txt"), b"needs two nodes").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    eprintln!("a close without quorum failed after {took:?}");
    assert!(took < std::time::Duration::from_secs(90), "{took:?}");
    s3.resume_node(1);
    s3.resume_node(2);
    // The nodes reconnect in the background; the same mount works once they have.
    let back = std::time::Instant::now();
    while let Err(e) = write_synced(&m.p("after.txt"), b"quorum is back") {
        assert!(back.elapsed() < std::time::Duration::from_secs(60), "{e}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!(
        "writes worked again {:?} after the nodes came back",
        back.elapsed()
    );
    m.unmount();
    assert_eq!(
        s3.env.stored(&format!("{prefix}after.txt")),
        b"quorum is back"
    );
    let m = Mount::on(s3.env.clone(), &source, &prefix, &[], &[]);
    assert_eq!(fs::read(m.p("big.bin")).unwrap(), big);
}
