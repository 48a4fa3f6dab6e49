use super::*;

/// The whole-number shortcut writes exactly what `f64`'s `Display` writes.
#[test]
fn write_value_matches_display() {
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        7.0,
        10.0,
        125_000.0,
        -125_000.0,
        0.5,
        1e-9,
        0.000_123,
        123.456,
        -3.25,
        4_294_967_295.0,
        9.0e15 - 1.0,
        9.0e15,
        2f64.powi(53),
        2f64.powi(53) + 2.0,
        1e21,
        -1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    values.extend((0..2000).map(|i| (i as f64 - 1000.0) * 9_973.0));
    values.extend((0..64).map(|i| 2f64.powi(i) - 1.0));
    for v in values {
        let mut out = Vec::new();
        write_value(v, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{v}"), "{v:?}");
    }
}

/// A file is read whole into the kept buffer, also when it is larger than its capacity,
/// and a second read replaces the first one's text.
#[test]
fn read_into_reads_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    std::fs::write(dir.path().join("small"), "cpu 1 2 3\n").unwrap();
    let mut text = String::with_capacity(16);
    read_into(&dir.path().join("big"), &mut text).unwrap();
    assert_eq!(text, big);
    read_into(&dir.path().join("small"), &mut text).unwrap();
    assert_eq!(text, "cpu 1 2 3\n");
    std::fs::write(dir.path().join("bad"), b"\xff\xfe").unwrap();
    assert!(read_into(&dir.path().join("bad"), &mut text).is_err());
    assert!(read_into(&dir.path().join("missing"), &mut text).is_err());
}

/// A procfs file is kept open between reads, and each read still gives the kernel's current
/// text (the seek back to 0 makes seq_file write it again).
#[test]
fn kept_proc_file_gives_fresh_text_at_each_read() {
    let buf = Buf::new();
    let path = Path::new("/proc/uptime");
    let first = buf.read(path).unwrap().clone();
    assert!(buf.kept.lock().unwrap().is_some(), "a procfs file is kept open");
    // /proc/uptime changes every 10 ms; wait for the positive signal, however loaded the machine.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let again = buf.read(path).unwrap().clone();
        assert!(again.ends_with('\n') && again.split_ascii_whitespace().count() == 2, "{again:?}");
        if again != first {
            break;
        }
        assert!(Instant::now() < deadline, "/proc/uptime read through the kept file never changed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(buf.kept.lock().unwrap().is_some());
}

/// A regular file (a fixture) is never kept open: one replaced by another file is read anew.
#[test]
fn regular_file_is_not_kept_open_so_a_replaced_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meminfo");
    std::fs::write(&path, "MemTotal: 1 kB\n").unwrap();
    let buf = Buf::new();
    assert_eq!(*buf.read(&path).unwrap(), "MemTotal: 1 kB\n");
    assert!(buf.kept.lock().unwrap().is_none());
    let next = dir.path().join("next");
    std::fs::write(&next, "MemTotal: 2 kB\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(*buf.read(&path).unwrap(), "MemTotal: 2 kB\n");
}

/// Names kept by line follow the file: a line that changes, appears or goes gets its own.
#[test]
fn by_line_names_follow_the_keys_of_each_read() {
    let mut cache: Vec<(Box<str>, String)> = Vec::new();
    let built = std::cell::Cell::new(0);
    let read = |keys: &[&str], cache: &mut Vec<(Box<str>, String)>| -> Vec<String> {
        let mut at = 0;
        keys.iter()
            .map(|k| {
                by_line(cache, &mut at, k, || {
                    built.set(built.get() + 1);
                    format!("name_{k}")
                })
                .clone()
            })
            .collect()
    };
    assert_eq!(read(&["a", "b"], &mut cache), ["name_a", "name_b"]);
    assert_eq!(read(&["a", "b"], &mut cache), ["name_a", "name_b"]);
    assert_eq!(read(&["a", "c", "b"], &mut cache), ["name_a", "name_c", "name_b"]);
    assert_eq!(read(&["b"], &mut cache), ["name_b"]);
    // 2 at first, none again for the same keys, then c and b (moved), then b (moved).
    assert_eq!(built.get(), 5);
    assert_eq!(cache.len(), 3);
}

/// The integer shortcut reads every number exactly as the float parser does.
#[test]
fn parse_f64_matches_the_float_parser() {
    let mut texts: Vec<String> = [
        "0",
        "-0",
        "+0",
        "1",
        "-1",
        "+7",
        "007",
        "0.5",
        "-3.25",
        "1e3",
        "NaN",
        "inf",
        "-inf",
        "",
        " 1",
        "1 ",
        "x",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "-9223372036854775808",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.extend((0..64).flat_map(|i| [format!("{}", (1u64 << i) - 1), format!("{}", (1u64 << i) + 1)]));
    texts.extend((0..2000u64).map(|i| format!("{}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
    for t in texts {
        let (ours, float) = (parse_f64(&t), t.parse::<f64>().ok());
        assert_eq!(ours.map(f64::to_bits), float.map(f64::to_bits), "{t:?}");
    }
}

/// netclass on the real sysfs keeps attribute descriptors open between scrapes, and a scrape
/// through kept descriptors writes what a fresh collector (opening every attribute) writes for
/// `lo` (present in every network namespace; its attributes do not change).
#[test]
fn netclass_kept_attributes_read_as_fresh_ones() {
    fn lo(c: &netclass::NetclassCollector) -> String {
        let buf = Buf::new();
        let scrape = Scrape { stat_buf: &buf, proc_stat: Default::default() };
        let mut families = Vec::new();
        c.collect(&scrape, &mut families).unwrap();
        let mut out = Vec::new();
        for f in &families {
            write_text(f, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        text.lines().filter(|l| l.contains("device=\"lo\"")).map(|l| format!("{l}\n")).collect()
    }
    assert!(Path::new("/sys/class/net/lo").exists(), "the test needs the real sysfs");
    let paths = Paths { rootfs: "/".into(), procfs: "/proc".into(), sysfs: "/sys".into() };
    let kept = netclass::NetclassCollector::new(&paths);
    let first = lo(&kept);
    assert!(kept.kept_descriptors() > 0, "nothing kept on sysfs");
    let again = lo(&kept);
    let fresh = lo(&netclass::NetclassCollector::new(&paths));
    assert!(first.contains("node_network_mtu_bytes{device=\"lo\"}"), "{first}");
    assert!(first.contains("node_network_info{"), "{first}");
    assert_eq!(again, fresh);
    assert_eq!(again, first);
}

/// A kept seq_file read in one read(2) (no read to EOF) gives the whole text, as does the
/// usual read to EOF when the first read may be partial (a record as long as a page), and a
/// regular file (never kept) is read whole too.
#[test]
fn read_records_gives_the_whole_table() {
    let udp = Path::new("/proc/net/udp");
    assert!(udp.exists(), "the test needs the real procfs");
    let buf = Buf::new();
    for max_record in [512, 4096, 512] {
        for _ in 0..2 {
            let text = buf.read_records(udp, max_record).unwrap();
            assert!(text.starts_with("   sl  local_address"), "{text}");
            assert_eq!(*text, std::fs::read_to_string(udp).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let table: String = (0..100).map(|i| format!("{i:>127}\n")).collect();
    std::fs::write(dir.path().join("udp"), &table).unwrap();
    assert_eq!(*buf.read_records(&dir.path().join("udp"), 512).unwrap(), table);
}
