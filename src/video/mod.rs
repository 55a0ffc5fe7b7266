//! Video in DICOM (MPEG-4 AVC/H.264, PS3.5 A.4.5 to A.4.9) made playable
//! by a browser's `<video>`: the elementary stream stored in the pixel data
//! is rewrapped, not decoded or re-encoded, into an MP4 file. Pictures
//! keep their bits; what the container needs (access units, IDR pictures,
//! display order for B-frames) is read from the NAL units.

mod annexb;
mod mp4;

use annexb::{PocCounter, SequenceParameters, SliceHeader};

/// The transfer syntaxes whose pixel data is one H.264 stream.
pub const AVC_TRANSFER_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106",
];

pub fn is_avc(transfer_syntax: &str) -> bool {
    AVC_TRANSFER_SYNTAXES.contains(&transfer_syntax.trim_end_matches('\0'))
}

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("malformed H.264 stream: {0}")]
    Malformed(&'static str),
    #[error("the H.264 stream has no {0}")]
    Missing(&'static str),
}

/// How the stream is shown.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Milliseconds per frame (FrameTime, or 1000 / the frame rate).
    pub frame_ms: f64,
    pub width: u16,
    pub height: u16,
}

/// One picture being gathered, in decode order.
struct Picture {
    data: Vec<u8>,
    idr: bool,
    /// (IDR period, picture order count): the display order.
    order: (u32, i64),
}

/// Rewrap an H.264 Annex B stream as an MP4 file.
pub fn to_mp4(stream: &[u8], timing: Timing) -> Result<Vec<u8>, VideoError> {
    let units = annexb::nal_units(stream);
    let sps = units
        .iter()
        .find(|n| n.kind() == annexb::SPS && n.bytes.len() >= 4)
        .ok_or(VideoError::Missing("sequence parameter set"))?;
    let pps = units
        .iter()
        .find(|n| n.kind() == annexb::PPS)
        .ok_or(VideoError::Missing("picture parameter set"))?;
    let parameters = SequenceParameters::parse(sps.bytes)?;
    let mut poc = PocCounter::new(&parameters);
    let mut pictures: Vec<Picture> = Vec::new();
    // A new access unit starts at a delimiter, parameter set or SEI after
    // a picture's slices, or at a slice that starts a picture.
    let mut open = false;
    let mut pending: Vec<u8> = Vec::new();
    let mut period = 0u32;
    for unit in &units {
        let kind = unit.kind();
        if matches!(
            kind,
            annexb::DELIMITER | annexb::SPS | annexb::PPS | annexb::SEI
        ) {
            open = false;
            if kind == annexb::SEI {
                append(&mut pending, unit.bytes);
            }
            continue;
        }
        if !unit.is_slice() {
            append(&mut pending, unit.bytes);
            continue;
        }
        let header = SliceHeader::parse(unit, &parameters)?;
        let idr = kind == annexb::IDR;
        if !open || header.first_in_picture {
            if idr {
                period += 1;
            }
            let count = match header.poc_lsb {
                Some(lsb) => poc.next(lsb, idr, unit.is_reference()),
                // POC types 1 and 2: shown in decode order.
                None => pictures.len() as i64,
            };
            pictures.push(Picture {
                data: std::mem::take(&mut pending),
                idr,
                order: (period, count),
            });
            open = true;
        }
        if let Some(picture) = pictures.last_mut() {
            append(&mut picture.data, unit.bytes);
            picture.idr |= idr;
        }
    }
    if pictures.is_empty() {
        return Err(VideoError::Missing("picture"));
    }
    // Each picture's place on screen; a picture shown before its decode
    // position needs a delay for all, which the edit list takes away.
    let mut shown: Vec<usize> = (0..pictures.len()).collect();
    shown.sort_by_key(|&i| pictures[i].order);
    let mut rank = vec![0usize; pictures.len()];
    for (position, &i) in shown.iter().enumerate() {
        rank[i] = position;
    }
    let delay = (0..pictures.len())
        .map(|i| i.saturating_sub(rank[i]))
        .max()
        .unwrap_or(0);
    let samples: Vec<mp4::Sample> = pictures
        .into_iter()
        .enumerate()
        .map(|(i, p)| mp4::Sample {
            data: p.data,
            sync: p.idr,
            composition_offset: (rank[i] + delay - i) as u32,
        })
        .collect();
    let frame_ticks =
        (timing.frame_ms.clamp(1.0, 10_000.0) * f64::from(mp4::TIMESCALE) / 1000.0).round() as u32;
    Ok(mp4::write(
        &mp4::Track {
            width: timing.width,
            height: timing.height,
            frame_ticks,
            sps: sps.bytes,
            pps: pps.bytes,
            delay_frames: delay as u32,
        },
        &samples,
    ))
}

fn append(sample: &mut Vec<u8>, nal: &[u8]) {
    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    sample.extend_from_slice(nal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_without_parameter_sets_is_refused() {
        let timing = Timing {
            frame_ms: 40.0,
            width: 16,
            height: 16,
        };
        assert!(matches!(
            to_mp4(&[0, 0, 1, 0x65, 0x88], timing),
            Err(VideoError::Missing(_))
        ));
        assert!(matches!(to_mp4(&[], timing), Err(VideoError::Missing(_))));
    }

    /// Streams come from whoever stored the object: garbage after a
    /// plausible SPS and PPS is an error or an MP4, never a panic.
    #[test]
    fn hostile_streams_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let timing = Timing {
            frame_ms: 0.0,
            width: 0,
            height: 0,
        };
        for _ in 0..3000 {
            let mut stream = vec![0, 0, 1, 0x67, 100, 0, 40];
            for _ in 0..(next() % 64) {
                match next() % 6 {
                    0 => stream.extend([
                        0,
                        0,
                        1,
                        [0x68, 0x65, 0x41, 0x06, 0x09][(next() % 5) as usize],
                    ]),
                    _ => stream.push(next() as u8),
                }
            }
            let _ = to_mp4(&stream, timing);
        }
    }
}
