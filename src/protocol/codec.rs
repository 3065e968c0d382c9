//! Decompressing a record batch's records, bounded; and compressing them, for a topic's
//! `compression.type`.
//!
//! A v2 batch compresses its records as one block with the codec in its attributes: gzip, snappy
//! (raw, as librdkafka writes it, or in the xerial framing the Java client writes), lz4 (the LZ4
//! frame format) or zstd. The bytes come from a client, so the output is bounded before it is
//! allocated where the format says its size (snappy, zstd) and while it is read otherwise: a
//! batch that would decompress past `max` is an error, never an allocation of that size.
//!
//! [`compress`] writes what every client reads: snappy in the xerial framing the Java client
//! writes (its reader needs it; librdkafka and the others read both), lz4 frames with
//! independent 64 KiB blocks and no checksums but the header's, as Kafka writes them.

use std::io::Read;

pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The header the xerial snappy framing (Java's `SnappyOutputStream`) starts with.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// The records of a batch compressed with `codec`, at most `max` bytes of them.
pub fn decompress(codec: i16, data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    match codec {
        NONE => bounded(data.len(), max).map(|()| data.to_vec()),
        GZIP => read_bounded(flate2::read::GzDecoder::new(data), max, "gzip"),
        SNAPPY if data.starts_with(XERIAL_MAGIC) => xerial_snappy(data, max),
        SNAPPY => {
            let mut out = Vec::new();
            raw_snappy(data, max, &mut out)?;
            Ok(out)
        }
        LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), max, "lz4"),
        ZSTD => {
            // The frame header states the size; bulk decompression refuses more than `max`.
            zstd::bulk::decompress(data, max).map_err(|e| format!("zstd: {e} (or more than {max} bytes)"))
        }
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// The xerial framing's block size (the uncompressed bytes per block), as the Java client's
/// `SnappyOutputStream` uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// `records` compressed with `codec` (NONE: as they are).
pub fn compress(codec: i16, records: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    match codec {
        NONE => Ok(records.to_vec()),
        GZIP => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(records).and_then(|()| w.finish()).map_err(|e| format!("gzip: {e}"))
        }
        SNAPPY => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1u32.to_be_bytes()); // version
            out.extend_from_slice(&1u32.to_be_bytes()); // compatible version
            let mut enc = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_BYTES) {
                let packed = enc.compress_vec(block).map_err(|e| format!("snappy: {e}"))?;
                out.extend_from_slice(&(packed.len() as u32).to_be_bytes());
                out.extend_from_slice(&packed);
            }
            Ok(out)
        }
        LZ4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            w.write_all(records).map_err(|e| format!("lz4: {e}"))?;
            w.finish().map_err(|e| format!("lz4: {e}"))
        }
        ZSTD => zstd::bulk::compress(records, 3).map_err(|e| format!("zstd: {e}")),
        other => Err(format!("unknown compression codec {other}")),
    }
}

fn bounded(len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("records decompress to more than {max} bytes"));
    }
    Ok(())
}

fn read_bounded(r: impl Read, max: usize, codec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(max as u64 + 1).read_to_end(&mut out).map_err(|e| format!("{codec}: {e}"))?;
    bounded(out.len(), max)?;
    Ok(out)
}

fn raw_snappy(block: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let len = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
    bounded(out.len() + len, max)?;
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|e| format!("snappy: {e}"))?;
    Ok(())
}

/// xerial framing: a 16-byte header, then blocks of a big-endian u32 length and raw snappy.
fn xerial_snappy(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = XERIAL_HEADER_LEN.min(data.len());
    while at < data.len() {
        let len_bytes = data.get(at..at + 4).ok_or("snappy: truncated xerial block length")?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        at += 4;
        let block = data.get(at..at.saturating_add(len)).ok_or("snappy: xerial block runs past the batch")?;
        raw_snappy(block, max, &mut out)?;
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    fn sample() -> Vec<u8> {
        (0..10_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    /// `data` compressed as a client would (raw snappy, as librdkafka writes it).
    pub(crate) fn compress(codec: i16, data: &[u8]) -> Vec<u8> {
        match codec {
            GZIP => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            }
            SNAPPY => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            LZ4 => {
                let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            }
            ZSTD => zstd::bulk::compress(data, 3).unwrap(),
            _ => data.to_vec(),
        }
    }

    #[test]
    fn every_codec_round_trips_within_the_bound_and_is_refused_past_it() {
        let data = sample();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = compress(codec, &data);
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data, "codec {codec}");
            let err = decompress(codec, &packed, data.len() - 1).unwrap_err();
            assert!(err.contains("more than"), "codec {codec}: {err}");
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read_block_by_block() {
        let data = sample();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for part in data.chunks(7_000) {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(SNAPPY, &framed, data.len()).unwrap(), data);
        assert!(decompress(SNAPPY, &framed, 7_000).is_err());
        framed.truncate(framed.len() - 3);
        assert!(decompress(SNAPPY, &framed, data.len()).is_err(), "a torn block is an error");
    }

    #[test]
    fn what_the_broker_compresses_reads_back_with_every_codec() {
        let data: Vec<u8> = sample().repeat(10); // 400 KB: several xerial and lz4 blocks
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = super::compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data, "codec {codec}");
        }
        let snappy = super::compress(SNAPPY, &data).unwrap();
        assert!(snappy.starts_with(XERIAL_MAGIC), "snappy in the Java client's framing");
        let lz4 = super::compress(LZ4, &data).unwrap();
        // Frame magic, then FLG: version 01, independent blocks, no checksums, no content size;
        // BD: 64 KiB blocks.
        assert_eq!(&lz4[..6], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40]);
        assert!(super::compress(5, &data).is_err());
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD, 5, -1] {
            assert!(decompress(codec, b"\x00\x01garbage\xff", 1 << 20).is_err(), "codec {codec}");
        }
    }
}
