//! A persistent thread pool for the CPU backend's parallel regions.
//!
//! A forward pass of a small model is hundreds of parallel regions of a few microseconds each
//! (a 576x576 matvec streams 200 KB), so spawning threads or even waking sleeping ones per region
//! would cost more than the work. The workers here spin on an epoch counter between regions, fall
//! back to yielding after a short while and to sleeping on a condition variable after about a
//! millisecond of idleness, so an idle engine costs no CPU.
//!
//! [`Pool::run`] runs one closure on every thread (the caller is thread 0) and returns when all
//! have finished; that return is the only synchronization point. A panic on a worker is caught and
//! re-raised on the caller.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it yields, and yields before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(50);
const YIELD_FOR: Duration = Duration::from_millis(2);

/// The job of the current region: a type-erased `&(dyn Fn(usize) + Sync)`.
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Written by the caller before `epoch` is bumped, read by workers after they see the bump.
    job: UnsafeCell<Option<Job>>,
    /// Incremented once per region.
    epoch: AtomicU64,
    /// Workers still running the current region.
    remaining: AtomicUsize,
    /// A worker panicked in the current region.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers asleep on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the thread holding `Pool::region` while no worker reads it
// (between regions: `remaining` is 0), and only read by workers between the epoch bump (Release /
// Acquire) and their decrement of `remaining`; the pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// One range of work units per thread of a region: its owner takes units from the front, and a
/// thread whose own range is empty steals from the back of another's, so a thread that started
/// late or ran slower (another process on its core, a colder cache) does not hold up the region.
/// Each range is one atomic word (start and end) on its own cache line: the owner's takes stay in
/// its cache until a thief arrives at the end of the region.
pub struct Ranges {
    ranges: Vec<Padded>,
}

#[repr(align(128))]
struct Padded(AtomicU64);

fn pack(start: usize, end: usize) -> u64 {
    ((start as u64) << 32) | end as u64
}

fn unpack(v: u64) -> (usize, usize) {
    ((v >> 32) as usize, (v & 0xffff_ffff) as usize)
}

impl Ranges {
    /// Units `0..n` split into `threads` contiguous ranges of near-equal length.
    pub fn new(n: usize, threads: usize) -> Self {
        assert!(n < 1 << 32, "work units fit in 32 bits");
        let ranges = (0..threads)
            .map(|i| {
                let (start, end) = (n * i / threads, n * (i + 1) / threads);
                Padded(AtomicU64::new(pack(start, end)))
            })
            .collect();
        Self { ranges }
    }

    /// The next units for thread `i`: up to `chunk` from the front of its own range, else up to
    /// `chunk` from the back of another's; `None` when all the work is taken.
    pub fn next(&self, i: usize, chunk: usize) -> Option<std::ops::Range<usize>> {
        let own = &self.ranges[i].0;
        let mut cur = own.load(Ordering::Relaxed);
        loop {
            let (start, end) = unpack(cur);
            if start >= end {
                break;
            }
            let to = (start + chunk).min(end);
            match own.compare_exchange_weak(cur, pack(to, end), Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(start..to),
                Err(now) => cur = now,
            }
        }
        let n = self.ranges.len();
        for other in (1..n).map(|k| &self.ranges[(i + k) % n].0) {
            let mut cur = other.load(Ordering::Relaxed);
            loop {
                let (start, end) = unpack(cur);
                if start >= end {
                    break;
                }
                let from = end.saturating_sub(chunk).max(start);
                match other.compare_exchange_weak(
                    cur,
                    pack(start, from),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(from..end),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

/// A fixed set of worker threads; see the module docs.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the duration of a region, so concurrent callers take turns.
    region: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Pool {
    /// A pool of `threads` threads in all (at least 1): the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            epoch: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("hearth-cpu-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("the OS can start a CPU worker thread")
            })
            .collect();
        Self {
            shared,
            workers,
            region: Mutex::new(()),
        }
    }

    /// Threads taking part in a region, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(i)` for every thread index `i` in `0..threads()`, index 0 on the calling thread,
    /// and returns when all have returned.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            job(0);
            return;
        }
        let _region = self.region.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: we wait below until
        // every worker has finished with the job before returning (or unwinding).
        let erased: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
        // SAFETY: no worker reads `job` now: the previous region ended with `remaining == 0` and
        // we hold `region`.
        unsafe { *s.job.get() = Some(erased) };
        s.panicked.store(false, Ordering::Relaxed);
        s.remaining.store(self.workers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let start = Instant::now();
        let mut spins = 0u32;
        while s.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a spin; look at it now and then.
            if spins.is_multiple_of(1024) && start.elapsed() >= SPIN_FOR {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a CPU backend worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for the next region: spin, then yield, then sleep.
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(1024) {
                std::hint::spin_loop();
                continue;
            }
            // Reading the clock costs more than a spin; look at it now and then.
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let idle = idle_since.elapsed();
            if idle < SPIN_FOR {
                std::hint::spin_loop();
            } else if idle < YIELD_FOR {
                std::thread::yield_now();
            } else {
                let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_add(1, Ordering::SeqCst);
                // Re-check under the lock: `run` bumps the epoch before it reads `sleeping`, and
                // notifies under the lock, so a wake-up cannot be missed.
                let guard = if s.epoch.load(Ordering::SeqCst) == seen
                    && !s.shutdown.load(Ordering::SeqCst)
                {
                    s.wake
                        .wait_timeout(guard, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                } else {
                    guard
                };
                s.sleeping.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            }
        }
        seen = s.epoch.load(Ordering::Acquire);
        // SAFETY: the caller wrote the job before bumping the epoch (Release, paired with our
        // Acquire) and keeps it alive until `remaining` reaches 0, which we only signal below.
        let job = unsafe { (*s.job.get()).expect("a region has a job") };
        // SAFETY: see above: the pointee outlives this use.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index) }));
        if result.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hand_out_every_unit_exactly_once_even_when_one_thread_does_it_all() {
        for (n, threads, chunk) in [(0, 2, 1), (1, 2, 1), (37, 2, 2), (100, 3, 4), (5, 8, 1)] {
            let ranges = Ranges::new(n, threads);
            let mut seen = vec![0; n];
            // Thread 0 takes everything: its own units, then the others' from their backs.
            while let Some(r) = ranges.next(0, chunk) {
                assert!(r.len() <= chunk && !r.is_empty());
                for u in r {
                    seen[u] += 1;
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "{n} {threads} {chunk}: {seen:?}"
            );
            assert_eq!(ranges.next(threads - 1, chunk), None);
        }
        // Two threads racing over a large range: still each unit once.
        let pool = Pool::new(2);
        let n = 100_000;
        let ranges = Ranges::new(n, 2);
        let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        pool.run(&|i| {
            while let Some(r) = ranges.next(i, 3) {
                for u in r {
                    counts[u].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn every_thread_runs_each_region_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for region in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    hits[i].fetch_add(region + 1, Ordering::Relaxed);
                });
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), region + 1);
                }
                if region == 100 {
                    // Let the workers fall asleep, then wake them.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let sum = AtomicUsize::new(0);
        pool.run(&|i| {
            sum.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 3);
    }
}
