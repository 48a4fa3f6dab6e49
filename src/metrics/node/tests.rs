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
