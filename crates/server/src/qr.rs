//! Scan to pay: a payment's EMVCo QR payload (`qr_payload`), and its image as SVG or PNG.
//!
//! The payload is computed from the payment alone (its id, amount, currency and merchant), so
//! the API, a webhook and a replayed response all show the same text; it exists while the
//! payment requires confirmation. The matrix comes from the `qrcode` crate (error correction
//! level M); the PNG is written here from the matrix with the `png` crate: 8-bit grey, a quiet
//! zone of four modules, [`PNG_MODULE_PIXELS`] pixels per module.

use crate::error::ApiError;
use paycore_formats::emvco::{self, Payload};
use paycore_ledger::{format_amount, Merchant, Payment, PaymentStatus};
use qrcode::{Color, EcLevel, QrCode};

/// The merchant a payment names when its create request names none.
pub fn default_merchant() -> Merchant {
    Merchant {
        name: "paycore".to_owned(),
        city: "Internet".to_owned(),
        // ISO 3166-1 user-assigned "unknown or unspecified country".
        country: "ZZ".to_owned(),
        // ISO 18245 5999: miscellaneous and specialty retail.
        category_code: "5999".to_owned(),
    }
}

/// The payment's QR payload, while it requires confirmation.
pub fn payload(payment: &Payment) -> Option<String> {
    if payment.status != PaymentStatus::RequiresConfirmation {
        return None;
    }
    let default;
    let merchant = match &payment.merchant {
        Some(merchant) => merchant,
        None => {
            default = default_merchant();
            &default
        }
    };
    Some(emvco::encode(&Payload {
        payment: payment.id.to_string(),
        category_code: merchant.category_code.clone(),
        currency: payment.currency.numeric(),
        amount: format_amount(payment.amount, payment.currency),
        country: merchant.country.clone(),
        merchant_name: merchant.name.clone(),
        merchant_city: merchant.city.clone(),
    }))
}

/// Pixels per module in the PNG: a 41-module code (version 6, a typical paycore payload) with
/// its quiet zone is 392 pixels wide.
pub const PNG_MODULE_PIXELS: usize = 8;
/// The quiet zone around the code, in modules (the QR standard's minimum).
const QUIET_ZONE_MODULES: usize = 4;

fn matrix(text: &str) -> Result<QrCode, ApiError> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|_| ApiError::internal("The QR code could not be made."))
}

/// The code as an SVG document.
pub fn svg(text: &str) -> Result<String, ApiError> {
    Ok(matrix(text)?.render::<qrcode::render::svg::Color<'_>>().quiet_zone(true).min_dimensions(256, 256).build())
}

/// The code as a PNG image: black modules on white.
pub fn png(text: &str) -> Result<Vec<u8>, ApiError> {
    let code = matrix(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules + 2 * QUIET_ZONE_MODULES;
    let side = side_modules * PNG_MODULE_PIXELS;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (row, column) = (index / modules + QUIET_ZONE_MODULES, index % modules + QUIET_ZONE_MODULES);
        for y in row * PNG_MODULE_PIXELS..(row + 1) * PNG_MODULE_PIXELS {
            let start = y * side + column * PNG_MODULE_PIXELS;
            if let Some(run) = pixels.get_mut(start..start + PNG_MODULE_PIXELS) {
                run.fill(0);
            }
        }
    }
    let side = u32::try_from(side).map_err(|_| ApiError::internal("The QR code is too large."))?;
    let mut out = Vec::new();
    let failed = |_| ApiError::internal("The QR code's PNG could not be written.");
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(&pixels).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use paycore_ledger::{AccountId, CaptureMethod, Currency, PaymentId, TenantId};

    fn payment(status: PaymentStatus) -> Payment {
        Payment {
            id: PaymentId(42),
            tenant: TenantId(1),
            payer: None,
            payee: AccountId(2),
            amount: 1250,
            currency: Currency::from_code("JPY").unwrap(),
            capture_method: CaptureMethod::Automatic,
            status,
            description: None,
            failure_code: None,
            amount_captured: 0,
            amount_refunded: 0,
            expires_at: 10,
            created_at: 1,
            updated_at: 1,
            transfer: None,
            fx: None,
            merchant: None,
        }
    }

    #[test]
    fn the_payload_names_the_payment_and_decodes() {
        let text = payload(&payment(PaymentStatus::RequiresConfirmation)).unwrap();
        let decoded = emvco::decode(&text).unwrap();
        assert_eq!(decoded.payment, PaymentId(42).to_string());
        assert_eq!((decoded.currency, decoded.amount.as_str()), (392, "1250"));
        assert_eq!((decoded.merchant_name.as_str(), decoded.country.as_str()), ("paycore", "ZZ"));
        assert_eq!(payload(&payment(PaymentStatus::Succeeded)), None);
    }

    #[test]
    fn images() {
        let text = payload(&payment(PaymentStatus::RequiresConfirmation)).unwrap();
        let png = png(&text).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = svg(&text).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }
}
