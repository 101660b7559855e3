//! Thread priority for background work (monitors) and returning freed memory to the kernel:
//! the second module allowed `unsafe`, two libc calls.
#![allow(unsafe_code)]

/// Moves the calling thread to the `SCHED_IDLE` policy (it runs only when a core
/// would otherwise idle, and any normal thread that wakes preempts it at once),
/// and sets its nice value to `nice` (Linux: both are per thread). Best effort:
/// failure is logged, never fatal.
pub fn lower_thread_priority(nice: i32) {
    // SAFETY: gettid, sched_setscheduler and setpriority take plain integers and a
    // pointer to a live, initialised `sched_param` on our stack.
    let (idle, niced) = unsafe {
        let tid = libc::gettid();
        let param = libc::sched_param { sched_priority: 0 };
        (
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param),
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice),
        )
    };
    if idle != 0 || niced != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "could not lower thread priority");
    }
}

/// Hands memory the allocator holds but no longer uses back to the kernel (glibc keeps freed
/// small blocks in its arenas; a dropped graph of millions of them would stay in RSS).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a plain integer and only touches the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}
