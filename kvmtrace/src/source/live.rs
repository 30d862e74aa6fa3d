//! The live ring buffer, read with tokio.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use kvmtrace_common::Event;
use tokio::io::{unix::AsyncFd, Interest};

/// Reads [`Event`]s from the probes' ring buffer.
pub struct LiveRing {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records whose size was not an [`Event`]'s (never expected; counted, not hidden).
    pub malformed: u64,
}

impl LiveRing {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<LiveRing> {
        // SAFETY: the RingBuf owns its map's file descriptor and keeps it open, unchanged,
        // until it is dropped together with the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(LiveRing { ring, malformed: 0 })
    }

    /// Appends what the ring holds to `out` without waiting; returns how many were read.
    pub fn drain(&mut self, out: &mut Vec<Event>) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            match Event::from_le_bytes(&item) {
                Some(ev) if item.len() == Event::SIZE => {
                    out.push(ev);
                    n += 1;
                }
                _ => self.malformed += 1,
            }
        }
        n
    }

    /// Waits until events arrive or `timeout` passes, then drains.
    pub async fn read(
        &mut self,
        out: &mut Vec<Event>,
        timeout: Duration,
    ) -> std::io::Result<usize> {
        match tokio::time::timeout(timeout, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                guard.clear_ready();
            }
            Err(_elapsed) => {}
        }
        Ok(self.drain(out))
    }
}
