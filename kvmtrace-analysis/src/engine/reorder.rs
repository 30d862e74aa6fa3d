//! Events reach userspace slightly out of timestamp order across CPUs (a program takes its
//! timestamp before it reserves ring-buffer space). [`Reorder`] holds events for a bounded
//! window and releases them in timestamp order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
    heap: BinaryHeap<Reverse<Keyed>>,
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
            heap: BinaryHeap::new(),
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
        self.heap.push(Reverse(Keyed {
            ts: ev.ts_ns,
            seq: self.seq,
            ev: EventKey(ev),
        }));
        let watermark = self.max_seen.saturating_sub(self.window_ns);
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.ts > watermark {
                break;
            }
            self.pop_into(out);
        }
    }

    fn pop_into(&mut self, out: &mut Vec<Event>) {
        if let Some(Reverse(k)) = self.heap.pop() {
            self.released = self.released.max(k.ts);
            out.push(k.ev.0);
        }
    }

    /// Releases everything held.
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        while !self.heap.is_empty() {
            self.pop_into(out);
        }
    }

    pub fn held(&self) -> usize {
        self.heap.len()
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
}
