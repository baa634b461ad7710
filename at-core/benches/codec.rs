//! at-core's codec, measured against the obvious floor in the same run.
//!
//! `cargo bench -p at-core` — figures and how to read them: docs/BENCHMARKS.md.

use std::hint::black_box;

use at_core::calculator::CALCULATOR;
use at_core::{Frame, FrameDecoder, HEADER_LEN, Header, Kind};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ADD: &[u8] = br#"{"func": "add", "args": [10, 20]}"#;

fn frame(seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + body.len()];
    at_core::encode_frame(Kind::Request, seq, body, &mut out).unwrap();
    out
}

fn header(c: &mut Criterion) {
    let mut g = c.benchmark_group("header");
    let h = Header::new(Kind::Request, 1, ADD);
    let bytes = h.to_bytes();
    g.bench_function("encode", |b| b.iter(|| black_box(black_box(&h).to_bytes())));
    g.bench_function("decode+check", |b| {
        b.iter(|| black_box(Header::parse(black_box(&bytes), 65536)))
    });
    g.bench_function("floor: copy 16 bytes", |b| {
        let mut out = [0u8; 16];
        b.iter(|| {
            out.copy_from_slice(black_box(&bytes));
            black_box(&out);
        })
    });
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32");
    let table1 = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);
    let table16 = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);
    for size in [33usize, 1024, 65536] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("at_core::checksum", size),
            &data,
            |b, d| b.iter(|| black_box(at_core::checksum(black_box(d)))),
        );
        g.bench_with_input(
            BenchmarkId::new("table 1 KiB (firmware)", size),
            &data,
            |b, d| b.iter(|| black_box(table1.checksum(black_box(d)))),
        );
        g.bench_with_input(
            BenchmarkId::new("crc crate, 16 KiB table", size),
            &data,
            |b, d| b.iter(|| black_box(table16.checksum(black_box(d)))),
        );
        g.bench_with_input(
            BenchmarkId::new("floor: copy_from_slice", size),
            &data,
            |b, d| {
                let mut out = vec![0u8; d.len()];
                b.iter(|| {
                    out.copy_from_slice(black_box(d));
                    black_box(&out);
                })
            },
        );
    }
    g.finish();
}

fn decoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("decoder: 10,000 glued add frames");
    let wire: Vec<u8> = (0..10_000u32).flat_map(|i| frame(i, ADD)).collect();
    g.throughput(Throughput::Bytes(wire.len() as u64));
    for chunk in [1usize, 7, 4096] {
        g.bench_with_input(
            BenchmarkId::new("chunk bytes", chunk),
            &chunk,
            |b, &chunk| {
                b.iter(|| {
                    let mut decoder = FrameDecoder::<[u8; 4112]>::new(4096);
                    let mut frames = 0u32;
                    for piece in wire.chunks(chunk) {
                        let mut piece = piece;
                        while !piece.is_empty() {
                            let n = decoder.push(piece);
                            piece = &piece[n..];
                            while let Ok(Some(f)) = decoder.next_frame() {
                                frames += black_box(f.header.seq) & 1;
                            }
                        }
                    }
                    black_box(frames)
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("floor: copy in chunk bytes", chunk),
            &chunk,
            |b, &chunk| {
                let mut buf = vec![0u8; 4112];
                b.iter(|| {
                    let mut at = 0;
                    for piece in wire.chunks(chunk) {
                        if at + piece.len() > buf.len() {
                            at = 0;
                        }
                        buf[at..at + piece.len()].copy_from_slice(piece);
                        at += piece.len();
                    }
                    black_box(&buf);
                })
            },
        );
    }
    g.finish();
}

fn respond(c: &mut Criterion) {
    let mut g = c.benchmark_group("request -> reply");
    let wire = frame(1, ADD);
    let mut out = [0u8; 256];
    g.bench_function("respond_to_bytes add(10, 20)", |b| {
        b.iter(|| {
            black_box(at_core::respond_to_bytes(
                &CALCULATOR,
                black_box(&wire),
                65536,
                &mut out,
            ))
        })
    });
    let frame = Frame::parse(&wire, 65536).unwrap();
    g.bench_function("respond (frame already checked) add(10, 20)", |b| {
        b.iter(|| black_box(at_core::respond(&CALCULATOR, black_box(&frame), &mut out)))
    });
    g.bench_function("Request::parse add(10, 20)", |b| {
        b.iter(|| black_box(at_core::Request::parse(black_box(ADD))))
    });
    let div = frame_body(br#"{"func": "div", "args": [10, 4]}"#);
    g.bench_function("respond_to_bytes div(10, 4) (a double result)", |b| {
        b.iter(|| {
            black_box(at_core::respond_to_bytes(
                &CALCULATOR,
                black_box(&div),
                65536,
                &mut out,
            ))
        })
    });
    g.bench_function("floor: copy the request frame", |b| {
        b.iter(|| {
            out[..wire.len()].copy_from_slice(black_box(&wire));
            black_box(&out);
        })
    });
    g.finish();
}

fn frame_body(body: &[u8]) -> Vec<u8> {
    frame(1, body)
}

criterion_group!(benches, header, crc, decoder, respond);
criterion_main!(benches);
