//! The panel's branding on the wire (`GET /api/v1/branding`, no key needed).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the panel shows as its product: from `serve --branding FILE`, else the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrandingView {
    #[schema(example = "Acme Cloud")]
    pub product_name: String,
    /// Where the panel serves the logo (this listener), when one is configured.
    pub logo_url: Option<String>,
    #[schema(pattern = "^#[0-9a-f]{6}$", example = "#1d4e89")]
    pub primary_color: String,
    #[schema(pattern = "^#[0-9a-f]{6}$", example = "#0b6e4f")]
    pub accent_color: String,
    pub support_url: Option<String>,
}
