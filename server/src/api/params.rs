//! The query parameters the `/v1` read and kick endpoints share, checked in one place: a
//! missing or malformed one answers 400 `invalid_request` naming it.

use super::error::ApiError;
use crate::backend_message::{check_app, check_user};
use tether_protocol::names;

/// `app`: required, a valid app name.
pub fn app(value: Option<String>) -> Result<String, ApiError> {
    let app = value.ok_or_else(|| ApiError::invalid("app is required"))?;
    check_app(&app)?;
    Ok(app)
}

/// `room`: required, a valid room name.
pub fn room(value: Option<String>) -> Result<String, ApiError> {
    let room = value.ok_or_else(|| ApiError::invalid("room is required"))?;
    check_room(&room)?;
    Ok(room)
}

/// A room name given where it is optional.
pub fn check_room(room: &str) -> Result<(), ApiError> {
    names::validate_room(room).map_err(|e| ApiError::invalid(e.to_string()))
}

/// `userId`: required, a valid user id.
pub fn user(value: Option<String>) -> Result<String, ApiError> {
    let user = value.ok_or_else(|| ApiError::invalid("userId is required"))?;
    check_user(&user)?;
    Ok(user)
}

/// `limit`: 1 to `max`, `default` when absent.
pub fn limit(value: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = value.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1-{max}")));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn each_parameter_is_required_checked_and_named() {
        assert_eq!(app(Some("shop".into())).unwrap(), "shop");
        assert!(message(app(None).unwrap_err()).contains("app is required"));
        assert!(message(app(Some("bad app".into())).unwrap_err()).contains("app"));
        assert_eq!(room(Some("orders:1".into())).unwrap(), "orders:1");
        assert!(message(room(None).unwrap_err()).contains("room is required"));
        assert!(room(Some("a b".into())).is_err());
        assert_eq!(user(Some("u1".into())).unwrap(), "u1");
        assert!(message(user(None).unwrap_err()).contains("userId is required"));
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(limit(Some(1000), 100, 1000).unwrap(), 1000);
        for bad in [0, 1001] {
            assert!(
                message(limit(Some(bad), 100, 1000).unwrap_err()).contains("limit must be 1-1000")
            );
        }
    }
}
