//! White-label settings of the panel (`serve --branding FILE`, TOML): product name, logo, colours
//! and support link, validated once at start (a bad file stops `serve`). Without a file the panel
//! is Berqenas's. The logo's bytes are read here; `api/panel.rs` serves them.

use serde::Deserialize;
use std::path::Path;

/// The product name shown when no branding file is given.
pub const DEFAULT_PRODUCT: &str = "Berqenas";
/// Largest logo file taken.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

/// A colour `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb([u8; 3]);

impl Rgb {
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let hex = hex.ok_or_else(|| format!("{s:?} is not a colour #rrggbb"))?;
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string());
        Ok(Self([byte(0)?, byte(2)?, byte(4)?]))
    }

    /// WCAG contrast ratio of this colour against white.
    pub fn contrast_with_white(self) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let [r, g, b] = self.0.map(channel);
        let luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        1.05 / (luminance + 0.05)
    }
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

/// A logo: its bytes and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    /// The file extension the panel serves it under (`logo.png`).
    pub extension: &'static str,
}

/// The panel's look, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    pub product_name: String,
    pub logo: Option<Logo>,
    pub primary_color: Rgb,
    pub accent_color: Rgb,
    pub support_url: Option<String>,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            product_name: DEFAULT_PRODUCT.into(),
            logo: None,
            primary_color: Rgb([0x1d, 0x4e, 0x89]),
            accent_color: Rgb([0x0b, 0x6e, 0x4f]),
            support_url: None,
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandingFile {
    product_name: String,
    #[serde(default)]
    logo: Option<std::path::PathBuf>,
    #[serde(default)]
    primary_color: Option<String>,
    #[serde(default)]
    accent_color: Option<String>,
    #[serde(default)]
    support_url: Option<String>,
}

/// Why a branding file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidBranding {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

fn plain_text(field: &str, s: &str, max: usize) -> Result<(), InvalidBranding> {
    if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(InvalidBranding::Invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

fn logo_kind(path: &Path) -> Option<(&'static str, &'static str)> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => ("image/png", "png"),
        "svg" => ("image/svg+xml", "svg"),
        "jpg" | "jpeg" => ("image/jpeg", "jpg"),
        "webp" => ("image/webp", "webp"),
        _ => return None,
    })
}

impl Branding {
    /// Parses `text`; a relative logo path is taken from `dir` (the file's directory).
    pub fn from_toml(text: &str, dir: &Path) -> Result<Self, InvalidBranding> {
        let file: BrandingFile = toml::from_str(text)?;
        plain_text("product_name", &file.product_name, 64)?;
        let defaults = Self::default();
        let colour = |field: &str, raw: Option<String>, default: Rgb, min: f64| -> Result<Rgb, InvalidBranding> {
            let Some(raw) = raw else { return Ok(default) };
            let rgb = Rgb::parse(&raw).map_err(|e| InvalidBranding::Invalid(format!("{field}: {e}")))?;
            if rgb.contrast_with_white() < min {
                return Err(InvalidBranding::Invalid(format!(
                    "{field} {rgb} is too light: white on it has contrast {:.1}:1, at least {min}:1 is needed",
                    rgb.contrast_with_white()
                )));
            }
            Ok(rgb)
        };
        let primary_color = colour("primary_color", file.primary_color, defaults.primary_color, 4.5)?;
        let accent_color = colour("accent_color", file.accent_color, defaults.accent_color, 4.5)?;
        if let Some(url) = &file.support_url {
            plain_text("support_url", url, 512)?;
            let scheme_ok = ["https://", "http://", "mailto:"].iter().any(|s| url.starts_with(s));
            if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>') {
                return Err(InvalidBranding::Invalid(format!(
                    "support_url {url:?} must be an https://, http:// or mailto: address without spaces or quotes"
                )));
            }
        }
        let logo = match file.logo {
            None => None,
            Some(path) => {
                let path = dir.join(path);
                let (content_type, extension) = logo_kind(&path).ok_or_else(|| {
                    InvalidBranding::Invalid(format!("logo {}: must be .png, .svg, .jpg or .webp", path.display()))
                })?;
                let bytes = std::fs::read(&path)
                    .map_err(|source| InvalidBranding::Read { path: path.display().to_string(), source })?;
                if bytes.is_empty() || bytes.len() > MAX_LOGO_BYTES {
                    return Err(InvalidBranding::Invalid(format!(
                        "logo {}: {} bytes; it must be 1 to {MAX_LOGO_BYTES} bytes",
                        path.display(),
                        bytes.len()
                    )));
                }
                Some(Logo { bytes, content_type, extension })
            }
        };
        Ok(Self { product_name: file.product_name, logo, primary_color, accent_color, support_url: file.support_url })
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, InvalidBranding> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| InvalidBranding::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Branding, InvalidBranding> {
        Branding::from_toml(text, Path::new("/nonexistent"))
    }

    #[test]
    fn a_full_file_is_taken() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("logo.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").expect("write");
        let b = Branding::from_toml(
            "product_name = \"Acme Cloud\"\nlogo = \"logo.svg\"\nprimary_color = \"#123456\"\n\
             accent_color = \"#7A1F1F\"\nsupport_url = \"https://help.example.com/\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(b.product_name, "Acme Cloud");
        assert_eq!(b.primary_color.to_string(), "#123456");
        assert_eq!(b.accent_color.to_string(), "#7a1f1f");
        assert_eq!(b.logo.as_ref().map(|l| l.content_type), Some("image/svg+xml"));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (text, needle) in [
            ("product_name = \"\"", "product_name"),
            ("product_name = \"A\"\nprimary_color = \"red\"", "primary_color"),
            ("product_name = \"A\"\nprimary_color = \"#12345\"", "primary_color"),
            ("product_name = \"A\"\naccent_color = \"#ffff00\"", "too light"),
            ("product_name = \"A\"\nsupport_url = \"javascript:alert(1)\"", "support_url"),
            ("product_name = \"A\"\nlogo = \"logo.gif\"", "logo"),
            ("product_name = \"A\"\nlogo = \"logo.png\"", "logo.png"),
            ("product_name = \"A\"\ncolour = \"#000000\"", "unknown field"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn white_on_the_default_colours_is_readable() {
        let d = Branding::default();
        assert!(d.primary_color.contrast_with_white() >= 4.5);
        assert!(d.accent_color.contrast_with_white() >= 4.5);
    }
}
