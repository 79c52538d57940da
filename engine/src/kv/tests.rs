//! The block manager: prefix reuse, reference counts, LRU eviction, running out.

use super::*;

fn tokens(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| i * 7 + salt).collect()
}

#[test]
fn a_second_sequence_with_the_same_start_reuses_every_full_block() {
    let mut m = BlockManager::new(16, 4);
    let a = tokens(10, 0);
    let (mut sa, reused) = m.start(&a, usize::MAX);
    assert_eq!(reused, 0);
    assert!(m.reserve(&mut sa, 10));
    assert_eq!(sa.table.len(), 3);
    m.commit(&mut sa, &a, 10);
    assert_eq!(
        m.cached_blocks(),
        2,
        "two full blocks of four; the third is partial"
    );

    // Same first 9 tokens, then different: the two full blocks are shared.
    let mut b = a[..9].to_vec();
    b.extend([999, 998, 997]);
    let (sb, reused) = m.start(&b, usize::MAX);
    assert_eq!(reused, 8);
    assert_eq!(sb.table, sa.table[..2]);
    assert_eq!(m.counters().hits, 2);

    // A different first token shares nothing.
    let mut c = a.clone();
    c[0] = 12345;
    let (sc, reused) = m.start(&c, usize::MAX);
    assert_eq!((reused, sc.table.len()), (0, 0));

    // `max_blocks` caps the reuse (the caller keeps at least one token to compute).
    let (sd, reused) = m.start(&a[..8], 1);
    assert_eq!(reused, 4);
    for s in [sa, sb, sc, sd] {
        m.release(s);
    }
    assert_eq!(m.available(), 16);
    assert_eq!(m.cached_blocks(), 2, "released blocks stay cached");
}

#[test]
fn released_prefixes_survive_until_their_slots_are_needed_oldest_first() {
    let mut m = BlockManager::new(4, 2);
    let (a, b) = (tokens(4, 1), tokens(4, 2));
    for t in [&a, &b] {
        let (mut s, _) = m.start(t, usize::MAX);
        assert!(m.reserve(&mut s, 4));
        m.commit(&mut s, t, 4);
        m.release(s);
    }
    assert_eq!((m.available(), m.cached_blocks()), (4, 4));
    // A new sequence of 2 blocks evicts `a`'s two blocks (released first), not `b`'s.
    let c = tokens(4, 3);
    let (mut s, _) = m.start(&c, usize::MAX);
    assert!(m.reserve(&mut s, 4));
    assert_eq!(m.counters().evictions, 2);
    assert_eq!(m.start(&a, usize::MAX).1, 0, "a was evicted");
    let (sb, reused) = m.start(&b, usize::MAX);
    assert_eq!(reused, 4, "b is still cached");
    m.release(sb);
    m.release(s);
}

#[test]
fn blocks_in_use_are_never_evicted_and_running_out_is_reported() {
    let mut m = BlockManager::new(3, 2);
    let a = tokens(6, 0);
    let (mut sa, _) = m.start(&a, usize::MAX);
    assert!(m.reserve(&mut sa, 6));
    m.commit(&mut sa, &a, 6);
    assert_eq!(m.available(), 0);
    let (mut sb, _) = m.start(&tokens(2, 5), usize::MAX);
    assert!(
        !m.reserve(&mut sb, 2),
        "nothing left while a holds every block"
    );
    assert_eq!(m.needed(&sb, 2), 1);
    // A sequence sharing a's blocks needs no new ones.
    let (sc, reused) = m.start(&a, usize::MAX);
    assert_eq!(reused, 6);
    m.release(sa);
    assert_eq!(m.available(), 0, "c still uses them");
    m.release(sc);
    assert_eq!(m.available(), 3);
    assert!(m.reserve(&mut sb, 2));
}

#[test]
fn truncating_gives_back_blocks_past_the_kept_positions() {
    let mut m = BlockManager::new(8, 4);
    let (mut s, _) = m.start(&[], usize::MAX);
    assert!(m.reserve(&mut s, 13));
    assert_eq!((s.table.len(), m.available()), (4, 4));
    m.truncate(&mut s, 6);
    assert_eq!((s.table.len(), m.available()), (2, 6));
    m.release(s);
    assert_eq!(m.available(), 8);
}

#[test]
fn the_blocks_touched_follow_the_load_not_the_pool() {
    // A pool of 100 blocks whose idle cache keeps at least 4 blocks (two sequences).
    let mut m = BlockManager::new(100, 2).with_idle_floor(4);
    let seqs: Vec<Vec<u32>> = (0..20).map(|i| tokens(4, 100 + i)).collect();
    for t in &seqs {
        let (mut s, reused) = m.start(t, usize::MAX);
        assert_eq!(reused, 0);
        assert!(m.reserve(&mut s, 4));
        m.commit(&mut s, t, 4);
        m.release(s);
    }
    // Two blocks run at a time and at least four stay cached: five blocks were ever used (the
    // fifth when the cache first gave a block up), not 40.
    assert_eq!(m.touched(), 5);
    assert_eq!(m.counters().evictions, 40 - 5);
    assert_eq!(m.available(), 100);
    // The most recent sequences are the ones still cached.
    for (t, want) in [(&seqs[19], 4), (&seqs[18], 4), (&seqs[17], 0)] {
        let (s, reused) = m.start(t, usize::MAX);
        assert_eq!(reused, want);
        m.release(s);
    }

    // Without a floor below the pool's size, every block is used before any is evicted.
    let mut m = BlockManager::new(100, 2);
    for t in &seqs {
        let (mut s, _) = m.start(t, usize::MAX);
        assert!(m.reserve(&mut s, 4));
        m.commit(&mut s, t, 4);
        m.release(s);
    }
    assert_eq!((m.touched(), m.counters().evictions), (40, 0));
}
