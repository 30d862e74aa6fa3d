//! Events reach userspace slightly out of timestamp order across CPUs (a program takes its
//! timestamp before it reserves ring-buffer space). [`Reorder`] holds events for a bounded
//! window and releases them in timestamp order.
//!
//! Almost every event arrives no earlier than the one before it (one shared ring buffer,
//! reserved in time order but for the few hundred ns between a program's timestamp and its
//! reservation; text traces come sorted). Those go to the back of a queue, O(1); only the
//! stragglers go to a heap, and release merges the two by (timestamp, arrival). The order
//! released is the one a single heap would give: both hold (ts, seq)-sorted events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use kvmtrace_common::Event;

#[derive(PartialEq, Eq)]
struct Keyed {
    ts: u64,
    seq: u64,
    ev: EventKey,
}

/// `Event` without `Ord`: ordering is by (ts, arrival) only.
#[derive(PartialEq, Eq)]
struct EventKey(Event);

impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

/// A bounded reordering buffer.
pub struct Reorder {
    /// Events that arrived in order: sorted by (ts, seq).
    run: VecDeque<(u64, Event)>,
    /// Events that arrived earlier than the back of `run`.
    stragglers: BinaryHeap<Reverse<Keyed>>,
    window_ns: u64,
    max_seen: u64,
    seq: u64,
    /// Timestamp of the last event released.
    pub released: u64,
    /// Events that arrived later than the window allows (released at once, their time
    /// clamped by the consumer).
    pub late: u64,
}

impl Reorder {
    pub fn new(window_ns: u64) -> Reorder {
        Reorder {
            run: VecDeque::new(),
            stragglers: BinaryHeap::new(),
            window_ns,
            max_seen: 0,
            seq: 0,
            released: 0,
            late: 0,
        }
    }

    /// Adds an event; appends those now older than the window, in order, to `out`.
    pub fn push(&mut self, ev: Event, out: &mut Vec<Event>) {
        if ev.ts_ns < self.released {
            self.late += 1;
        }
        self.seq += 1;
        self.max_seen = self.max_seen.max(ev.ts_ns);
        match self.run.back() {
            Some((_, back)) if ev.ts_ns < back.ts_ns => {
                self.stragglers.push(Reverse(Keyed {
                    ts: ev.ts_ns,
                    seq: self.seq,
                    ev: EventKey(ev),
                }));
            }
            _ => self.run.push_back((self.seq, ev)),
        }
        let watermark = self.max_seen.saturating_sub(self.window_ns);
        while let Some(ts) = self.oldest() {
            if ts > watermark {
                break;
            }
            self.pop_into(out);
        }
    }

    /// The timestamp of the next event to release.
    fn oldest(&self) -> Option<u64> {
        let run = self.run.front().map(|(_, e)| e.ts_ns);
        let straggler = self.stragglers.peek().map(|Reverse(k)| k.ts);
        match (run, straggler) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop_into(&mut self, out: &mut Vec<Event>) {
        let from_run = match (self.run.front(), self.stragglers.peek()) {
            (Some(&(seq, ref e)), Some(Reverse(k))) => (e.ts_ns, seq) < (k.ts, k.seq),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return,
        };
        let ev = if from_run {
            self.run.pop_front().map(|(_, e)| e)
        } else {
            self.stragglers.pop().map(|Reverse(k)| k.ev.0)
        };
        if let Some(ev) = ev {
            self.released = self.released.max(ev.ts_ns);
            out.push(ev);
        }
    }

    /// Releases everything held.
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        while self.held() > 0 {
            self.pop_into(out);
        }
    }

    pub fn held(&self) -> usize {
        self.run.len() + self.stragglers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64) -> Event {
        Event {
            ts_ns: ts,
            ..Default::default()
        }
    }

    #[test]
    fn releases_in_order_within_the_window() {
        let mut r = Reorder::new(100);
        let mut out = Vec::new();
        for ts in [10, 5, 30, 20, 150, 120, 400] {
            r.push(ev(ts), &mut out);
        }
        let got: Vec<u64> = out.iter().map(|e| e.ts_ns).collect();
        assert_eq!(got, vec![5, 10, 20, 30, 120, 150]);
        r.push(ev(100), &mut out);
        assert_eq!(r.late, 1, "older than what was already released");
        r.flush(&mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(r.held(), 0);
    }

    /// The order released is a stable sort by timestamp of what was pushed, for any
    /// arrival order, as long as nothing arrives later than the window (checked against
    /// `sort_by_key`, which is stable).
    #[test]
    fn releases_a_stable_sort_of_what_it_was_given() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200 {
            let mut t = 1_000u64;
            let mut input = Vec::new();
            for i in 0..500u32 {
                t += next() % 50;
                // Mostly in order, some up to 90 ns early, ties on purpose.
                let ts = match next() % 4 {
                    0 => t.saturating_sub(next() % 90),
                    1 => t - t % 20,
                    _ => t,
                };
                input.push(Event {
                    ts_ns: ts,
                    tid: i,
                    ..Default::default()
                });
            }
            let mut r = Reorder::new(100);
            let mut out = Vec::new();
            for e in &input {
                r.push(*e, &mut out);
            }
            r.flush(&mut out);
            assert_eq!(r.late, 0);
            let mut want = input.clone();
            want.sort_by_key(|e| e.ts_ns);
            let got: Vec<(u64, u32)> = out.iter().map(|e| (e.ts_ns, e.tid)).collect();
            let want: Vec<(u64, u32)> = want.iter().map(|e| (e.ts_ns, e.tid)).collect();
            assert_eq!(got, want);
        }
    }
}
