fn main() {
    env_logger::init();
    let mut p = kvmtrace::probes::Probes::load(&Default::default()).unwrap();
    for s in &p.status {
        println!("{:?}", s);
    }
    let _r = p.take_ring().unwrap();
    println!("drops {}", p.drops());
}
