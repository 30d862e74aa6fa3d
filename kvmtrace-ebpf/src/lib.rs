#![no_std]
//! Library target so kvmtrace can name this crate as a build dependency (and rebuild when it
//! changes); the programs are in the `kvmtrace` binary target.
