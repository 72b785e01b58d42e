//! Many hosts, one bucket: the S3 side is a three-node Garage cluster on loopback ports that
//! keeps every object on all three nodes (`scripts/s3-server start --nodes 3`), as a storage
//! cluster behind many mounts would. Here: a storage node lost under load.

use std::fs;
use std::io::Write;

use crate::common::*;

/// One of three storage nodes killed in the middle of a workload through a mount on another
/// node (files written and closed, renamed, a multipart upload, reads): no operation fails and
/// S3 holds exactly what was closed. With a second node down there is no quorum: a close
/// fails with `EIO` within the bound, and the mount works again once the nodes are back.
#[test]
fn a_storage_node_lost_under_load_fails_no_operation() {
    if !alone("cluster::a_storage_node_lost_under_load_fails_no_operation") {
        return;
    }
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
    let took = write_again(&m, "after.txt", b"quorum is back");
    eprintln!("writes worked again {took:?} after the nodes came back");
    m.unmount();
    assert_eq!(
        s3.env.stored(&format!("{prefix}after.txt")),
        b"quorum is back"
    );
    let m = Mount::on(s3.env.clone(), &source, &prefix, &[], &[]);
    assert_eq!(fs::read(m.p("big.bin")).unwrap(), big);
}

/// Writes `name` until it is stored (at most a minute): how long that took.
fn write_again(m: &Mount, name: &str, data: &[u8]) -> std::time::Duration {
    let back = std::time::Instant::now();
    while let Err(e) = write_synced(&m.p(name), data) {
        assert!(back.elapsed() < std::time::Duration::from_secs(60), "{e}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    back.elapsed()
}

/// A network namespace joined to this one by a veth pair: a "host" of its own, whose link
/// can be cut. Removed on drop.
struct NetNs {
    name: String,
    host_side: String,
}

impl NetNs {
    /// `10.231.N.1` here, `10.231.N.2` inside.
    fn new(n: u8) -> NetNs {
        let name = format!("pailfs-{}-{n}", std::process::id());
        let host_side = format!("pfs{}h{n}", std::process::id() % 10_000);
        let peer = format!("pfs{}p{n}", std::process::id() % 10_000);
        let ns = NetNs { name, host_side };
        for cmd in [
            format!("ip netns add {}", ns.name),
            format!("ip link add {} type veth peer name {peer}", ns.host_side),
            format!("ip link set {peer} netns {}", ns.name),
            format!("ip addr add 10.231.{n}.1/30 dev {}", ns.host_side),
            format!("ip link set {} up", ns.host_side),
            format!("ip -n {} addr add 10.231.{n}.2/30 dev {peer}", ns.name),
            format!("ip -n {} link set {peer} up", ns.name),
            format!("ip -n {} link set lo up", ns.name),
        ] {
            sh(&cmd);
        }
        ns
    }

    /// The command that runs a program in the namespace's network only (`ip netns exec`
    /// would give it a mount namespace of its own, where its FUSE mount would be invisible).
    fn wrap(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.name)]
    }

    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        sh(&format!("ip link set {} {state}", self.host_side));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_side])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A host cut off from the storage (its link down, packets dropped): its operations fail
/// with EIO within the bound (`--max-attempts` x `--request-timeout`, plus backoff), a file
/// whose close failed is kept in failed/, what it had stored is untouched, and once the link
/// is back the same mount works again.
#[test]
fn a_host_cut_off_fails_within_the_bound_and_works_again_when_reconnected() {
    if !alone("cluster::a_host_cut_off_fails_within_the_bound_and_works_again_when_reconnected") {
        return;
    }
    let ns = NetNs::new(7);
    let s3 = PrivateS3::bound("cutoff", 3970, "10.231.7.1");
    let prefix = unique_prefix("cutoff");
    let source = format!("{}:{prefix}", s3.env.bucket);
    let wrap = ns.wrap();
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let flags = ["--max-attempts", "2", "--request-timeout", "5"];
    let m = Mount::wrapped(s3.env.clone(), &source, &prefix, &flags, &wrap);
    write_synced(&m.p("before.txt"), b"stored before the cut").unwrap();
    s3.env
        .put(&format!("{prefix}unread.txt"), b"never read here");

    let mut during = fs::File::create(m.p("during.txt")).unwrap();

    ns.link(false);
    let bound = std::time::Duration::from_secs(2 * (5 + 5) + 10);
    during.write_all(b"written while cut off").unwrap();
    let started = std::time::Instant::now();
    let err = during.sync_all().unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(took < bound, "an fsync took {took:?}");
    drop(during);
    let started = std::time::Instant::now();
    let err = fs::read(m.p("unread.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < bound,
        "a read took {:?}",
        started.elapsed()
    );
    eprintln!(
        "cut off: a close failed after {took:?}, a read after {:?}",
        started.elapsed()
    );
    let failed = walk(m.cache.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/failed/"))
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(fs::read(&failed[0]).unwrap(), b"written while cut off");

    ns.link(true);
    let took = write_again(&m, "after.txt", b"reconnected");
    eprintln!("writes worked again {took:?} after the link came back");
    assert_eq!(fs::read(m.p("unread.txt")).unwrap(), b"never read here");
    assert_eq!(
        s3.env.stored(&format!("{prefix}before.txt")),
        b"stored before the cut"
    );
    assert_eq!(s3.env.stored(&format!("{prefix}after.txt")), b"reconnected");
}
