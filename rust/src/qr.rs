//! QR codes for tokens: encode with `fast_qr`, draw SVG and PNG here.
//!
//! Encoding picks the most compact single mode for the whole text (numeric, then
//! alphanumeric, then byte) and the smallest version that holds it at the requested
//! error-correction level, as segno does, so a token (`RX1:` + Base45, all alphanumeric)
//! is one alphanumeric segment: version 6 at level M. The chosen mask is kept so the
//! same symbol can be rebuilt elsewhere (`ordonum.qr.to_segno`).
//!
//! Drawing is done from the module matrix, with no image library:
//! * SVG: one `<path>` of horizontal runs (`M x y h n` per row, `m dx 0 h n` within a
//!   row), stroked one module wide on the row's mid-line, viewBox in module units;
//! * PNG: 1-bit grayscale (colour type 0, depth 1), one IDAT compressed with
//!   miniz_oxide, CRC-32 from crc32fast.

use std::fmt::{self, Write as _};

use fast_qr::{Mode, QRBuilder, ECL};

/// Largest scale (pixels per module) and border (modules) accepted when drawing.
pub const MAX_SCALE: u32 = 64;
pub const MAX_BORDER: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecc {
    L,
    M,
    Q,
    H,
}

impl Ecc {
    pub fn parse(s: &str) -> Result<Ecc, QrError> {
        match s {
            "L" | "l" => Ok(Ecc::L),
            "M" | "m" => Ok(Ecc::M),
            "Q" | "q" => Ok(Ecc::Q),
            "H" | "h" => Ok(Ecc::H),
            _ => Err(QrError::Ecc(s.chars().take(16).collect())),
        }
    }

    pub fn letter(self) -> char {
        match self {
            Ecc::L => 'L',
            Ecc::M => 'M',
            Ecc::Q => 'Q',
            Ecc::H => 'H',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrError {
    Empty,
    TooLong { len: usize, ecc: Ecc },
    Ecc(String),
    Scale(u32),
    Border(u32),
}

impl fmt::Display for QrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QrError::Empty => f.write_str("cannot encode an empty text"),
            QrError::TooLong { len, ecc } => {
                write!(f, "text too long for a QR code at level {}: {len} bytes", ecc.letter())
            }
            QrError::Ecc(s) => write!(f, "ecc must be one of 'L', 'M', 'Q', 'H', got {s:?}"),
            QrError::Scale(s) => write!(f, "scale must be between 1 and {MAX_SCALE}, got {s}"),
            QrError::Border(b) => write!(f, "border must be between 0 and {MAX_BORDER}, got {b}"),
        }
    }
}

impl std::error::Error for QrError {}

/// A QR symbol: `size × size` modules, row-major, dark = true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrMatrix {
    pub version: u8,
    pub size: usize,
    pub ecc: Ecc,
    /// Data mask pattern, 0..=7 (ISO/IEC 18004 numbering).
    pub mask: u8,
    pub modules: Vec<bool>,
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

pub fn encode(text: &str, ecc: Ecc) -> Result<QrMatrix, QrError> {
    if text.is_empty() {
        return Err(QrError::Empty);
    }
    let b = text.as_bytes();
    let mode = if b.iter().all(u8::is_ascii_digit) {
        Mode::Numeric
    } else if b.iter().all(|c| ALNUM.contains(c)) {
        Mode::Alphanumeric
    } else {
        Mode::Byte
    };
    let level = match ecc {
        Ecc::L => ECL::L,
        Ecc::M => ECL::M,
        Ecc::Q => ECL::Q,
        Ecc::H => ECL::H,
    };
    let q = QRBuilder::new(b)
        .ecl(level)
        .mode(mode)
        .build()
        .map_err(|_| QrError::TooLong { len: b.len(), ecc })?;
    let size = q.size;
    let modules = q.data.get(..size * size).ok_or(QrError::TooLong { len: b.len(), ecc })?;
    Ok(QrMatrix {
        version: ((size - 17) / 4) as u8,
        size,
        ecc,
        mask: q.mask.map_or(0, |m| m as u8),
        modules: modules.iter().map(|m| m.value()).collect(),
    })
}

fn check_drawing(scale: u32, border: u32) -> Result<(), QrError> {
    if scale == 0 || scale > MAX_SCALE {
        return Err(QrError::Scale(scale));
    }
    if border > MAX_BORDER {
        return Err(QrError::Border(border));
    }
    Ok(())
}

impl QrMatrix {
    pub fn dark(&self, x: usize, y: usize) -> bool {
        self.modules.get(y * self.size + x).copied().unwrap_or(false)
    }

    /// A compact SVG: one path of horizontal runs; `scale` pixels per module.
    pub fn svg(&self, scale: u32, border: u32) -> Result<String, QrError> {
        check_drawing(scale, border)?;
        let n = self.size + 2 * border as usize;
        let px = n * scale as usize;
        let mut s = String::with_capacity(200 + self.size * self.size);
        let _ = write!(
            s,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"{px}\" height=\"{px}\" viewBox=\"0 0 {n} {n}\" \
             shape-rendering=\"crispEdges\"><path fill=\"#fff\" d=\"M0 0h{n}v{n}H0z\"/>\
             <path stroke=\"#000\" d=\""
        );
        let border = border as usize;
        for y in 0..self.size {
            let row = &self.modules[y * self.size..(y + 1) * self.size];
            let mut pen: Option<usize> = None; // x where the pen stands in this row
            let mut x = 0;
            while x < self.size {
                if !row[x] {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < self.size && row[x] {
                    x += 1;
                }
                match pen {
                    None => {
                        let _ = write!(s, "M{} {}.5h{}", start + border, y + border, x - start);
                    }
                    Some(p) => {
                        let _ = write!(s, "m{} 0h{}", start - p, x - start);
                    }
                }
                pen = Some(x);
            }
        }
        s.push_str("\"/></svg>\n");
        Ok(s)
    }

    /// A 1-bit grayscale PNG; `scale` pixels per module, `border` light modules around.
    pub fn png(&self, scale: u32, border: u32) -> Result<Vec<u8>, QrError> {
        check_drawing(scale, border)?;
        let scale = scale as usize;
        let border = border as usize;
        let px = (self.size + 2 * border) * scale;
        let stride = px.div_ceil(8);
        // Scanlines: a filter byte (0, none) then the packed bits, 1 = white.
        let mut raw = vec![0u8; (stride + 1) * px];
        let mut line = vec![0xFFu8; stride];
        for (my, chunk) in raw.chunks_exact_mut((stride + 1) * scale).enumerate() {
            line.fill(0xFF);
            if my >= border && my < border + self.size {
                let y = my - border;
                for x in 0..self.size {
                    if self.modules[y * self.size + x] {
                        let x0 = (x + border) * scale;
                        for p in x0..x0 + scale {
                            line[p / 8] &= !(0x80 >> (p % 8));
                        }
                    }
                }
            }
            // Padding bits past the width stay 1: harmless, readers ignore them.
            for row in chunk.chunks_exact_mut(stride + 1) {
                row[1..].copy_from_slice(&line);
            }
        }
        let idat = miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6);
        let mut out = Vec::with_capacity(idat.len() + 64);
        out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = [0u8; 13];
        ihdr[0..4].copy_from_slice(&(px as u32).to_be_bytes());
        ihdr[4..8].copy_from_slice(&(px as u32).to_be_bytes());
        ihdr[8] = 1; // bit depth
        ihdr[9] = 0; // grayscale; compression, filter, interlace: 0
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        Ok(out)
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_capacity_table() {
        // Alphanumeric capacity at level M (ISO/IEC 18004 table 7): v6 holds 154, v7 178.
        let m = |n: usize| encode(&"A".repeat(n), Ecc::M).unwrap();
        assert_eq!(m(153).version, 6);
        assert_eq!(m(154).version, 6);
        assert_eq!(m(155).version, 7);
        assert_eq!(m(154).size, 41);
        assert_eq!(m(20).version, 1);
        assert_eq!(m(21).version, 2);
        assert_eq!(encode("0123", Ecc::H).unwrap().version, 1);
        assert_eq!(encode("", Ecc::M), Err(QrError::Empty));
        assert_eq!(
            encode(&"a".repeat(3000), Ecc::H),
            Err(QrError::TooLong { len: 3000, ecc: Ecc::H })
        );
        assert_eq!(Ecc::parse("x"), Err(QrError::Ecc("x".into())));
    }

    #[test]
    fn drawings_reproduce_the_matrix() {
        let q = encode("RX1:HELLO WORLD 0123456789", Ecc::M).unwrap();
        // Finder pattern corner is dark, the separator next to it light.
        assert!(q.dark(0, 0) && !q.dark(7, 0));
        // Paint the SVG path back onto a grid.
        let svg = q.svg(3, 2).unwrap();
        let d = svg.split("stroke=\"#000\" d=\"").nth(1).unwrap().split('"').next().unwrap();
        let n = q.size + 4;
        let mut grid = vec![false; n * n];
        let (mut x, mut y) = (0usize, 0usize);
        let mut it = d.chars().peekable();
        let num = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut s = String::new();
            while let Some(&c) = it.peek() {
                if c.is_ascii_digit() || c == '.' {
                    s.push(c);
                    it.next();
                } else {
                    break;
                }
            }
            s
        };
        while let Some(c) = it.next() {
            match c {
                'M' => {
                    x = num(&mut it).parse().unwrap();
                    assert_eq!(it.next(), Some(' '));
                    y = num(&mut it).parse::<f64>().unwrap() as usize;
                }
                'm' => {
                    x += num(&mut it).parse::<usize>().unwrap();
                    assert_eq!(it.next(), Some(' '));
                    assert_eq!(num(&mut it), "0");
                }
                'h' => {
                    let len: usize = num(&mut it).parse().unwrap();
                    for i in x..x + len {
                        grid[y * n + i] = true;
                    }
                    x += len;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        for yy in 0..n {
            for xx in 0..n {
                let inside = (2..q.size + 2).contains(&xx) && (2..q.size + 2).contains(&yy);
                let want = inside && q.dark(xx - 2, yy - 2);
                assert_eq!(grid[yy * n + xx], want, "({xx}, {yy})");
            }
        }
        let png = q.png(2, 4).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(q.png(0, 4), Err(QrError::Scale(0)));
        assert_eq!(q.svg(1, 65), Err(QrError::Border(65)));
    }
}
