//! Each small test guest, built by septem-build and run by septem-run, on both
//! backends with the same expectations.

use septem_tests::{backend_tests, guest, run_guest};

const GUEST_FAULT: i32 = 124;
const FORBIDDEN_SYSCALL: i32 = 125;

backend_tests!(hello_prints_and_exits_zero, |b| {
    run_guest(b, &guest("hello"), &[], &[])
        .expect_status(0)
        .stdout_has("Hello from a Septem guest!\n");
});

backend_tests!(args_and_env_reach_the_guest, |b| {
    let out = run_guest(
        b,
        &guest("args_env"),
        &["--env", "FOO=bar", "--env", "EMPTY="],
        &["one", "two words", "ünï"],
    );
    out.expect_status(0)
        .stdout_has("arg[0]=args_env.septem\n")
        .stdout_has("arg[1]=one\narg[2]=two words\narg[3]=ünï\n")
        .stdout_has("env FOO=bar\nenv EMPTY=\n")
        .stdout_has("args_env done");
    assert!(
        !out.stdout.contains("env PATH="),
        "host environment leaked into the guest:\n{}",
        out.stdout
    );
});

backend_tests!(exit_status_is_the_guests, |b| {
    for (arg, want) in [("0", 0), ("7", 7), ("255", 255), ("300", 300 & 0xff)] {
        run_guest(b, &guest("exit_code"), &[], &[arg]).expect_status(want);
    }
});

backend_tests!(panic_reports_message_and_exits_101, |b| {
    run_guest(b, &guest("panic"), &[], &[])
        .expect_status(101)
        .stdout_has("panic: about to panic")
        .stderr_has("test guest panicked on purpose (answer 42)")
        .stderr_has("src/main.rs");
});

backend_tests!(allocation_stress, |b| {
    run_guest(b, &guest("alloc_stress"), &[], &[])
        .expect_status(0)
        .stdout_has("alloc_stress OK");
});

backend_tests!(heap_exhaustion_panics_cleanly, |b| {
    let out = run_guest(b, &guest("alloc_stress"), &["--mem", "24M"], &["exhaust"]);
    out.expect_status(101)
        .stdout_has("exhausting the heap")
        .stderr_has("guest aborted (status 101)");
});

backend_tests!(forbidden_syscall_is_stopped_and_named, |b| {
    let out = run_guest(b, &guest("forbidden_syscall"), &[], &[]);
    out.expect_status(FORBIDDEN_SYSCALL)
        .stdout_has("executing getpid")
        .stderr_has("getpid")
        .stderr_has("39");
    assert!(!out.stdout.contains("NOT STOPPED"), "{}", out.stdout);
});

fn fault(b: septem_tests::Backend, mode: &str, words: &[&str]) {
    let out = run_guest(b, &guest("fault"), &[], &[mode]);
    out.expect_status(GUEST_FAULT)
        .stdout_has(&format!("fault: mode {mode}"))
        .stderr_has("guest fault");
    for w in words {
        out.stderr_has(w);
    }
    assert!(!out.stdout.contains("survived"), "{}", out.stdout);
}

backend_tests!(fault_null_read, |b| {
    fault(
        b,
        "null",
        &["page fault", "address 0x0", "read", "fault::main"],
    );
});

backend_tests!(fault_write_to_text, |b| {
    fault(b, "write_text", &["page fault", "write", "fault::main"]);
});

backend_tests!(fault_execute_data, |b| {
    fault(b, "exec_data", &["page fault", "exec"]);
});

backend_tests!(fault_execute_heap, |b| {
    fault(b, "exec_heap", &["page fault", "exec"]);
});

backend_tests!(fault_stack_overflow, |b| {
    fault(b, "stack_overflow", &["stack overflow", "fault::recurse"]);
});

backend_tests!(fault_invalid_opcode, |b| {
    fault(b, "ud2", &["invalid opcode", "fault::main"]);
});

backend_tests!(clocks_are_sane, |b| {
    run_guest(b, &guest("clock"), &[], &[])
        .expect_status(0)
        .stdout_has("clock OK");
});

backend_tests!(bad_hypercalls_get_errors_not_crashes, |b| {
    let out = run_guest(b, &guest("hypercall_abuse"), &[], &[]);
    out.expect_status(0).stdout_has("hypercall_abuse OK");
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
});

backend_tests!(trace_logs_every_hypercall, |b| {
    let out = run_guest(b, &guest("hello"), &["--trace"], &[]);
    out.expect_status(0)
        .stdout_has("Hello from a Septem guest!")
        .stderr_has("console_write(")
        .stderr_has("exit(status=0)");
});

backend_tests!(example_hello_greets, |b| {
    let out = run_guest(
        b,
        &septem_tests::example("hello"),
        &["--env", "GREETING=Howdy"],
        &["world", "--exit", "3"],
    );
    out.expect_status(3).stdout_has("world");
});
