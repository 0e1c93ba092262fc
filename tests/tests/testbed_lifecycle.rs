//! The testbed cleans up after itself and refuses clearly what it cannot do.

use std::path::Path;
use std::process::Command;

use gatemend_tests::testbed::binaries;
use gatemend_tests::testbed::slot::Slot;
use gatemend_tests::testbed::{Fleet, HostSpec};

#[test]
fn a_panicking_test_leaves_no_host_no_veth_and_no_process() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fleet = Fleet::boot(1, &HostSpec::default()).unwrap();
        let host = &fleet.hosts()[0];
        seen = Some((host.pid1(), format!("ve-{}", host.name())));
        assert!(Path::new(&format!("/proc/{}", host.pid1())).exists());
        panic!("a test failing while its host runs");
    }));
    assert!(result.is_err());
    let (pid1, veth) = seen.expect("the host booted before the panic");
    assert!(
        !Path::new(&format!("/proc/{pid1}")).exists(),
        "host PID 1 {pid1} still runs"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "{veth} still exists"
    );
}

#[test]
fn concurrent_holders_get_different_names_and_address_ranges() {
    let a = Slot::acquire().unwrap();
    let b = Slot::acquire().unwrap();
    assert_ne!(a.number(), b.number());
    assert_ne!(a.host_name(), b.host_name());
    assert_ne!(a.host_addr(), b.host_addr());
    assert_ne!(a.outer_addr(), b.outer_addr());
}

#[test]
fn without_root_the_demo_says_root_is_needed_instead_of_skipping() {
    let demo = binaries::path("gatemend-demo").unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&demo)
        .args(["--non-interactive", "--hosts", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
