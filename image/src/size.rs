//! Sizes as users write them on command lines (`--mem 64M`, `disk --size 1G`): shared
//! by septem-run and septem-build so both accept exactly the same spellings.

/// Why a size did not parse.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// No leading digits.
    #[error("'{0}' is not a size; write e.g. 64M, 1G, 512K or a number of bytes")]
    NotASize(String),
    /// A suffix other than K/M/G/T (optionally with `B`/`iB`) or `B`.
    #[error("unknown size suffix '{suffix}' in '{size}'; use K, M, G or T (binary multiples)")]
    UnknownSuffix {
        /// The whole input.
        size: String,
        /// The suffix.
        suffix: String,
    },
    /// Does not fit in 64 bits.
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

/// Parses `1048576` (bytes), `512K`, `64M`, `1G`, `1T`, also `KiB`/`MiB`/…,
/// `KB`/`MB`/… and a trailing `B`: all binary multiples, case-insensitive. Zero is a
/// valid size here; callers that need more say so.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::NotASize(s.to_string()));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(SizeError::UnknownSuffix {
                size: s.to_string(),
                suffix: suffix.to_string(),
            });
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::TooLarge(s.to_string()))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn errors() {
        assert!(matches!(parse_size(""), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("M"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::NotASize(_))));
        assert!(matches!(
            parse_size("64X"),
            Err(SizeError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_size("1.5G"),
            Err(SizeError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("20000000T"),
            Err(SizeError::TooLarge(_))
        ));
    }
}
