//! Where events come from: the live ring buffer and the embedded demo guest, combined into
//! one stream by [`session::Session`].

pub mod demo;
pub mod live;
pub mod session;
