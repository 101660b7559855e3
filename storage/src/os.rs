//! Thread priority for background work (monitors), returning freed memory to the kernel, and a
//! cache prefetch hint for the graph search: the second module allowed `unsafe`.
#![allow(unsafe_code)]

/// Moves the calling thread to the `SCHED_IDLE` policy (it runs only when a core
/// would otherwise idle, and any normal thread that wakes preempts it at once),
/// and sets its nice value to `nice` (Linux: both are per thread). Best effort:
/// failure is logged, never fatal.
pub fn lower_thread_priority(nice: i32) {
    IDLE_CLASS.with(|c| c.set(true));
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

/// (bytes available to an unprivileged writer, total bytes) of the file system holding `path`.
pub(crate) fn free_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a live NUL-terminated string and `st` a zeroed statvfs on our stack that
    // the call fills in.
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st), st)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Linux: all three are u64.
    let frsize = st.f_frsize;
    Ok((
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}

/// Long work a request runs at normal priority (a full consistency check holds the version's writer
/// lock, so it must not drop to the idle class) calls `tick` per item: every `PACE` of CPU it
/// gives the core to any thread waiting for it. On a busy machine a search then waits at most
/// about that long behind such work, instead of a whole scheduler time slice (milliseconds).
pub struct Pacer {
    since: std::time::Instant,
}

/// How long paced work runs between yields.
pub const PACE: std::time::Duration = std::time::Duration::from_micros(100);

impl Pacer {
    pub fn new() -> Self {
        Pacer {
            since: std::time::Instant::now(),
        }
    }

    #[inline]
    pub fn tick(&mut self) {
        if self.since.elapsed() >= PACE {
            std::thread::yield_now();
            self.since = std::time::Instant::now();
        }
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static IDLE_CLASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread asked for the idle class ([`lower_thread_priority`]).
pub fn on_idle_thread() -> bool {
    IDLE_CLASS.with(|c| c.get())
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

/// Asks the CPU to start loading the first cache lines of `v`: a hint with no effect on any result.
/// The graph search issues it for a node's unvisited neighbours before it computes their distances,
/// so their scattered vectors arrive in parallel rather than one miss at a time.
#[inline]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(v).min(PREFETCH_BYTES);
        for off in (0..bytes).step_by(64) {
            // SAFETY: `off` stays inside `v`; a prefetch never faults and reads nothing visible.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// How much of a vector [`prefetch`] asks for (the hardware prefetcher follows the rest).
const PREFETCH_BYTES: usize = 256;
