//! QR codes as SVG (a device's wg-quick config, a TOTP enrolment URI) for the panel: black modules
//! on white with the quiet zone, sized for a phone camera. Pure: text in, SVG text out.

/// Why a text cannot be encoded (longer than the largest QR version holds).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a QR code: {0}")]
pub struct QrError(String);

/// `text` as a standalone SVG document, at least 256 px square.
pub fn svg(text: &str) -> Result<String, QrError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| QrError(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_renders_as_one_svg_document() {
        let out = svg("[Interface]\nAddress = 198.18.0.2/32\n").expect("encodes");
        assert!(out.contains("<svg"), "{out}");
        assert!(out.ends_with("</svg>"), "{out}");
        assert!(!out.contains("<script"), "no script in the image");
    }

    #[test]
    fn a_text_too_long_for_any_version_is_an_error() {
        assert!(svg(&"x".repeat(8000)).is_err());
    }
}
