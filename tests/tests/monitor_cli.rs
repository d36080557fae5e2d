//! septem-run's command line: errors name the problem and map to distinct statuses.

use septem_tests::{guest, root, septem_run};

const USAGE: i32 = 120;
const BAD_IMAGE: i32 = 121;
const BAD_CONFIG: i32 = 122;

fn hello() -> String {
    guest("hello").to_str().unwrap().to_string()
}

#[test]
fn missing_image_is_a_bad_image() {
    let out = septem_run(&["--backend", "seccomp", "/nonexistent/x.septem"]);
    out.expect_status(BAD_IMAGE)
        .stderr_has("/nonexistent/x.septem");
}

#[test]
fn a_non_elf_file_is_rejected() {
    let path = root().join("target/test-images/not-elf.septem");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"#!/bin/sh\necho hi\n").unwrap();
    septem_run(&["--backend", "seccomp", path.to_str().unwrap()])
        .expect_status(BAD_IMAGE)
        .stderr_has("not an ELF");
}

#[test]
fn unknown_option_is_a_usage_error() {
    septem_run(&["--frobnicate", &hello()]).expect_status(USAGE);
    septem_run(&["--backend", "qemu", &hello()]).expect_status(USAGE);
    septem_run(&["--backend", "seccomp", "--env", "NOEQUALS", &hello()])
        .expect_status(USAGE)
        .stderr_has("NOEQUALS");
}

#[test]
fn memory_bounds_are_checked() {
    septem_run(&["--backend", "seccomp", "--mem", "1M", &hello()])
        .expect_status(BAD_CONFIG)
        .stderr_has("too small");
    septem_run(&["--backend", "seccomp", "--mem", "100T", &hello()])
        .expect_status(BAD_CONFIG)
        .stderr_has("too large");
    septem_run(&["--backend", "seccomp", "--mem", "12 apples", &hello()]).expect_status(USAGE);
}

#[test]
fn undeclared_device_is_refused() {
    septem_run(&["--backend", "seccomp", "--net:service=tap0", &hello()])
        .expect_status(BAD_CONFIG)
        .stderr_has("service");
}

fn policy_lines(backend: &str) -> Vec<String> {
    let out = septem_run(&["--print-policy", "--backend", backend]);
    out.expect_status(0);
    let names = [
        "read",
        "write",
        "pread64",
        "pwrite64",
        "ppoll",
        "clock_gettime",
        "exit_group",
        "ioctl",
    ];
    out.stdout
        .lines()
        .filter(|l| names.iter().any(|n| l.split_whitespace().next() == Some(n)))
        .map(str::to_string)
        .collect()
}

#[test]
fn seccomp_policy_has_exactly_seven_syscalls() {
    let lines = policy_lines("seccomp");
    assert_eq!(lines.len(), 7, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.starts_with("ioctl")));
}

#[test]
fn kvm_policy_adds_only_kvm_run() {
    let lines = policy_lines("kvm");
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let ioctl = lines
        .iter()
        .find(|l| l.starts_with("ioctl"))
        .expect("ioctl line");
    assert!(ioctl.contains("KVM_RUN"), "{ioctl}");
}
