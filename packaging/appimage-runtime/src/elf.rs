//! Where the appended squashfs image starts: the end of the runtime's own ELF file.
//!
//! An AppImage is this runtime's ELF file with a squashfs image appended. The linker puts the
//! section header table last, so the ELF file ends at `e_shoff + e_shnum * e_shentsize`; the
//! upstream type-2 runtime finds its image the same way.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

/// The first bytes of a little-endian squashfs image (what `mksquashfs` writes).
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_CLASS_32: u8 = 1;
const ELF_CLASS_64: u8 = 2;
const ELF_DATA_LITTLE_ENDIAN: u8 = 1;
const ELF_DATA_BIG_ENDIAN: u8 = 2;
/// Size of the 64-bit ELF header, the larger of the two classes.
const ELF64_HEADER_LEN: usize = 64;

/// The squashfs image inside an AppImage file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLocation {
    /// Byte offset of the image in the file (the length of the runtime).
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub len: u64,
}

/// Finds the squashfs image appended to the ELF file at `path`.
pub fn locate_image(path: &Path) -> Result<ImageLocation> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("cannot read the size of {}", path.display()))?
        .len();
    let mut header = [0u8; ELF64_HEADER_LEN];
    let header_len = read_up_to(&mut file, &mut header)
        .with_context(|| format!("cannot read the ELF header of {}", path.display()))?;
    let offset = elf_end(&header[..header_len], &mut file)
        .with_context(|| format!("cannot find the end of the ELF file {}", path.display()))?;

    let mut magic = [0u8; 4];
    let magic_fits = offset
        .checked_add(4)
        .is_some_and(|magic_end| magic_end <= file_len);
    if magic_fits {
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut magic))
            .with_context(|| format!("cannot read {} at offset {offset}", path.display()))?;
    }
    if &magic != SQUASHFS_MAGIC {
        bail!(
            "this runtime has no image appended (no squashfs magic \"hsqs\" at offset {offset} of {})",
            path.display()
        );
    }
    Ok(ImageLocation {
        offset,
        len: file_len - offset,
    })
}

/// The end of the ELF file whose header is `header`; `file` is read only for the extended
/// section count (`e_shnum == 0`, the real count in section 0's `sh_size`).
pub fn elf_end(header: &[u8], file: &mut (impl Read + Seek)) -> Result<u64> {
    ensure!(
        header.len() >= 16 && &header[..4] == ELF_MAGIC,
        "not an ELF file"
    );
    let big_endian = match header[5] {
        ELF_DATA_LITTLE_ENDIAN => false,
        ELF_DATA_BIG_ENDIAN => true,
        other => bail!("unknown ELF byte order {other}"),
    };
    let read = FieldReader {
        bytes: header,
        big_endian,
    };
    // Field offsets from the System V ABI's ELF header layout.
    let (section_table_offset, entry_size, entry_count, section0_size_offset) = match header[4] {
        ELF_CLASS_64 => (read.u64(0x28)?, read.u16(0x3A)?, read.u16(0x3C)?, 0x20),
        ELF_CLASS_32 => (
            u64::from(read.u32(0x20)?),
            read.u16(0x2E)?,
            read.u16(0x30)?,
            0x14,
        ),
        other => bail!("unknown ELF class {other}"),
    };
    let mut entry_count = u64::from(entry_count);
    if entry_count == 0 && section_table_offset != 0 {
        entry_count =
            read_section0_size(file, section_table_offset + section0_size_offset, header)?;
    }
    entry_count
        .checked_mul(u64::from(entry_size))
        .and_then(|table_len| table_len.checked_add(section_table_offset))
        .context("the ELF section header table runs past 2^64 bytes")
}

/// Reads `sh_size` of section 0, which holds the section count when there are more than 0xff00.
fn read_section0_size(file: &mut (impl Read + Seek), at: u64, header: &[u8]) -> Result<u64> {
    let mut field = [0u8; 8];
    let field_len = if header[4] == ELF_CLASS_64 { 8 } else { 4 };
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut field[..field_len])?;
    let read = FieldReader {
        bytes: &field,
        big_endian: header[5] == ELF_DATA_BIG_ENDIAN,
    };
    if field_len == 8 {
        read.u64(0)
    } else {
        read.u32(0).map(u64::from)
    }
}

/// Reads integers of the ELF file's byte order out of a header.
struct FieldReader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl FieldReader<'_> {
    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        let field = self
            .bytes
            .get(at..at + N)
            .context("the ELF header is cut short")?;
        let mut array = [0u8; N];
        array.copy_from_slice(field);
        if self.big_endian {
            array.reverse();
        }
        Ok(array)
    }

    fn u16(&self, at: usize) -> Result<u16> {
        self.array(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32> {
        self.array(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: usize) -> Result<u64> {
        self.array(at).map(u64::from_le_bytes)
    }
}

/// Like `read_exact`, but a short file is not an error: returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn test_binary() -> std::path::PathBuf {
        std::env::current_exe().expect("the test binary's path")
    }

    #[test]
    fn elf_end_of_the_test_binary_is_its_file_length() {
        let bytes = std::fs::read(test_binary()).unwrap();
        let end = elf_end(&bytes[..ELF64_HEADER_LEN], &mut Cursor::new(&bytes)).unwrap();
        assert_eq!(end, bytes.len() as u64);
    }

    #[test]
    fn locate_image_on_a_binary_without_image_says_no_image_appended() {
        let path = test_binary();
        let error = locate_image(&path).unwrap_err().to_string();
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert!(
            error.starts_with("this runtime has no image appended"),
            "{error}"
        );
        assert!(
            error.contains(&format!("at offset {file_len} of")),
            "{error}"
        );
    }

    #[test]
    fn locate_image_finds_an_appended_squashfs_magic_at_the_elf_end() {
        let original = std::fs::read(test_binary()).unwrap();
        let mut copy = tempfile::NamedTempFile::new().unwrap();
        copy.write_all(&original).unwrap();
        copy.write_all(b"hsqs and then the rest of an image")
            .unwrap();
        copy.flush().unwrap();

        let location = locate_image(copy.path()).unwrap();
        assert_eq!(
            location,
            ImageLocation {
                offset: original.len() as u64,
                len: 34
            }
        );
    }

    #[test]
    fn locate_image_rejects_other_data_appended() {
        let original = std::fs::read(test_binary()).unwrap();
        let mut copy = tempfile::NamedTempFile::new().unwrap();
        copy.write_all(&original).unwrap();
        copy.write_all(b"PK\x03\x04 a zip file").unwrap();
        copy.flush().unwrap();

        let error = locate_image(copy.path()).unwrap_err().to_string();
        assert!(
            error.starts_with("this runtime has no image appended"),
            "{error}"
        );
    }

    #[test]
    fn locate_image_rejects_a_file_that_is_not_elf() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"#!/bin/sh\necho hello\n").unwrap();
        let error = format!("{:#}", locate_image(file.path()).unwrap_err());
        assert!(error.ends_with("not an ELF file"), "{error}");
    }

    /// A 32-bit big-endian header: e_shoff 0x1000, e_shentsize 40, e_shnum 3.
    #[test]
    fn elf_end_reads_a_32_bit_big_endian_header() {
        let mut header = [0u8; 52];
        header[..4].copy_from_slice(ELF_MAGIC);
        header[4] = ELF_CLASS_32;
        header[5] = ELF_DATA_BIG_ENDIAN;
        header[0x20..0x24].copy_from_slice(&0x1000u32.to_be_bytes());
        header[0x2E..0x30].copy_from_slice(&40u16.to_be_bytes());
        header[0x30..0x32].copy_from_slice(&3u16.to_be_bytes());
        let end = elf_end(&header, &mut Cursor::new(Vec::new())).unwrap();
        assert_eq!(end, 0x1000 + 3 * 40);
    }

    /// `e_shnum == 0`: the count (70,000 sections) is in section 0's `sh_size`.
    #[test]
    fn elf_end_reads_the_extended_section_count() {
        let section_table_offset = 128u64;
        let mut file = vec![0u8; 256];
        file[..4].copy_from_slice(ELF_MAGIC);
        file[4] = ELF_CLASS_64;
        file[5] = ELF_DATA_LITTLE_ENDIAN;
        file[0x28..0x30].copy_from_slice(&section_table_offset.to_le_bytes());
        file[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        let size_field = section_table_offset as usize + 0x20;
        file[size_field..size_field + 8].copy_from_slice(&70_000u64.to_le_bytes());
        let end = elf_end(&file[..ELF64_HEADER_LEN], &mut Cursor::new(&file)).unwrap();
        assert_eq!(end, section_table_offset + 70_000 * 64);
    }
}
