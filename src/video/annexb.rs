//! Reading an H.264 elementary stream (ITU-T H.264 Annex B byte stream):
//! NAL units, the sequence parameter set fields that slice headers depend
//! on, and of each slice header what decides its access unit and its
//! display order (picture order count).

use super::VideoError;

/// A NAL unit, header byte included, without its start code.
pub(super) struct Nal<'a> {
    pub bytes: &'a [u8],
}

impl Nal<'_> {
    pub fn kind(&self) -> u8 {
        self.bytes[0] & 0x1f
    }

    /// nal_ref_idc: zero for pictures nothing refers to.
    pub fn is_reference(&self) -> bool {
        self.bytes[0] & 0x60 != 0
    }

    pub fn is_slice(&self) -> bool {
        matches!(self.kind(), 1 | 5)
    }
}

pub(super) const IDR: u8 = 5;
pub(super) const SPS: u8 = 7;
pub(super) const PPS: u8 = 8;
pub(super) const DELIMITER: u8 = 9;
pub(super) const SEI: u8 = 6;

/// The NAL units of an Annex B stream, split at 3- and 4-byte start codes.
pub(super) fn nal_units(stream: &[u8]) -> Vec<Nal<'_>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(stream.len(), |next| next - 3);
        // Zero bytes before the next start code (a 4-byte start code, or
        // trailing_zero_8bits) belong to neither unit.
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            out.push(Nal {
                bytes: &stream[start..end],
            });
        }
    }
    out
}

/// Exp-Golomb and fixed-width reads over a NAL payload with its emulation
/// prevention bytes (00 00 03) removed.
struct Bits {
    data: Vec<u8>,
    at: usize,
}

impl Bits {
    fn new(payload: &[u8]) -> Self {
        let mut data = Vec::with_capacity(payload.len());
        let mut zeros = 0;
        for &b in payload {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> Result<u32, VideoError> {
        let byte = self
            .data
            .get(self.at / 8)
            .ok_or(VideoError::Malformed("a NAL unit ends early"))?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, VideoError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn ue(&mut self) -> Result<u32, VideoError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(VideoError::Malformed("an Exp-Golomb code is too long"));
            }
        }
        Ok(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }

    fn se(&mut self) -> Result<i32, VideoError> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Ok(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// What a slice header needs from its sequence parameter set.
#[derive(Debug, Clone, Copy)]
pub(super) struct SequenceParameters {
    separate_colour_plane: bool,
    log2_max_frame_num: u32,
    /// 0: the slice carries pic_order_cnt_lsb; 1 and 2: display order is
    /// derived from frame numbers, taken here as decode order.
    poc_type: u32,
    log2_max_poc_lsb: u32,
    frame_mbs_only: bool,
}

impl SequenceParameters {
    pub fn parse(sps: &[u8]) -> Result<Self, VideoError> {
        let mut r = Bits::new(sps.get(1..).unwrap_or_default());
        let profile = r.bits(8)?;
        r.bits(16)?; // constraint flags, level
        r.ue()?; // seq_parameter_set_id
        let mut separate_colour_plane = false;
        if matches!(
            profile,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            let chroma_format = r.ue()?;
            if chroma_format == 3 {
                separate_colour_plane = r.bit()? == 1;
            }
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.bit()?; // qpprime_y_zero_transform_bypass_flag
            if r.bit()? == 1 {
                let lists = if chroma_format == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? == 1 {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let log2_max_frame_num = r.ue()? + 4;
        let poc_type = r.ue()?;
        let mut log2_max_poc_lsb = 0;
        match poc_type {
            0 => log2_max_poc_lsb = r.ue()? + 4,
            1 => {
                r.bit()?;
                r.se()?;
                r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return Err(VideoError::Malformed("a POC cycle longer than 255"));
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        r.ue()?; // pic_width_in_mbs_minus1
        r.ue()?; // pic_height_in_map_units_minus1
        let frame_mbs_only = r.bit()? == 1;
        if log2_max_frame_num > 16 || log2_max_poc_lsb > 16 {
            return Err(VideoError::Malformed("a sequence parameter out of range"));
        }
        Ok(SequenceParameters {
            separate_colour_plane,
            log2_max_frame_num,
            poc_type,
            log2_max_poc_lsb,
            frame_mbs_only,
        })
    }
}

fn skip_scaling_list(r: &mut Bits, size: usize) -> Result<(), VideoError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + i64::from(r.se()?)).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Of a slice header: whether it starts a picture, and its
/// pic_order_cnt_lsb (for POC type 0).
#[derive(Debug, Clone, Copy)]
pub(super) struct SliceHeader {
    pub first_in_picture: bool,
    pub poc_lsb: Option<u32>,
}

impl SliceHeader {
    pub fn parse(nal: &Nal<'_>, sps: &SequenceParameters) -> Result<Self, VideoError> {
        let mut r = Bits::new(&nal.bytes[1..]);
        let first_mb = r.ue()?;
        r.ue()?; // slice_type
        r.ue()?; // pic_parameter_set_id
        if sps.separate_colour_plane {
            r.bits(2)?;
        }
        r.bits(sps.log2_max_frame_num)?; // frame_num
        if !sps.frame_mbs_only && r.bit()? == 1 {
            r.bit()?; // bottom_field_flag
        }
        if nal.kind() == IDR {
            r.ue()?; // idr_pic_id
        }
        let poc_lsb = match sps.poc_type {
            0 => Some(r.bits(sps.log2_max_poc_lsb)?),
            _ => None,
        };
        Ok(SliceHeader {
            first_in_picture: first_mb == 0,
            poc_lsb,
        })
    }
}

/// Picture order counts of type 0 (H.264 8.2.1.1), for frames.
pub(super) struct PocCounter {
    max_lsb: i64,
    prev_msb: i64,
    prev_lsb: i64,
}

impl PocCounter {
    pub fn new(sps: &SequenceParameters) -> Self {
        PocCounter {
            max_lsb: 1 << sps.log2_max_poc_lsb,
            prev_msb: 0,
            prev_lsb: 0,
        }
    }

    pub fn next(&mut self, lsb: u32, idr: bool, reference: bool) -> i64 {
        if idr {
            self.prev_msb = 0;
            self.prev_lsb = 0;
        }
        let lsb = i64::from(lsb);
        let msb = if lsb < self.prev_lsb && self.prev_lsb - lsb >= self.max_lsb / 2 {
            self.prev_msb + self.max_lsb
        } else if lsb > self.prev_lsb && lsb - self.prev_lsb > self.max_lsb / 2 {
            self.prev_msb - self.max_lsb
        } else {
            self.prev_msb
        };
        if reference {
            self.prev_msb = msb;
            self.prev_lsb = lsb;
        }
        msb + lsb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes_and_emulation_prevention() {
        // 1 | 010 | 011 | 00100 | 00101 → 0, 1, 2, 3, 4; then 00 00 03 01.
        let mut r = Bits::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000, 0, 0, 3, 1]);
        let values: Vec<u32> = (0..5).map(|_| r.ue().expect("ue")).collect();
        assert_eq!(values, [0, 1, 2, 3, 4]);
        assert_eq!(r.data.len(), 6, "the 03 after two zeros is dropped");
        let mut r = Bits::new(&[0b0100_1100]);
        assert_eq!((r.se().expect("se"), r.se().expect("se")), (1, -1));
    }

    #[test]
    fn start_codes_of_both_lengths() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let units: Vec<&[u8]> = nal_units(&stream).iter().map(|n| n.bytes).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
    }

    #[test]
    fn poc_wraps_past_its_lsb_range() {
        let sps = SequenceParameters {
            separate_colour_plane: false,
            log2_max_frame_num: 4,
            poc_type: 0,
            log2_max_poc_lsb: 4,
            frame_mbs_only: true,
        };
        let mut poc = PocCounter::new(&sps);
        let counts: Vec<i64> = [(0, true), (8, false), (14, false), (2, false), (0, true)]
            .iter()
            .map(|&(lsb, idr)| poc.next(lsb, idr, true))
            .collect();
        assert_eq!(counts, [0, 8, 14, 18, 0]);
    }
}
