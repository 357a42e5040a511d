//! How the edge declares its routes and what every handler shares: a resource answers 405
//! (problem+json) to a method it does not take and `HEAD` beside `GET`; unknown paths get a
//! problem+json 404; the intake limits are read from the config in force on every request.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::intake::Limits;
use super::params;
use super::problem::Problem;
use super::AppState;

/// A resource that takes `POST` only.
pub(super) fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// A resource that takes `GET` (and `HEAD`) only.
pub(super) fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    Problem::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
    .error_response()
}

/// Default service: unknown paths.
pub(super) async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    Problem::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}

/// The intake limits in force (a reload may have changed them since the start).
pub(super) fn limits(state: &AppState) -> Limits {
    Limits::from_config(&state.reloader.current().bff)
}

/// `Vary: Accept` on an answer whose format `format=auto` chose from the `Accept` header.
pub(super) fn vary_accept(r: &mut actix_web::HttpResponseBuilder, form: &super::intake::Form) {
    if params::varies_with_accept(form) {
        r.append_header((header::VARY, "Accept"));
    }
}

/// The `file` part of a single-image form (400 without it).
pub(super) fn required_file(form: &super::intake::Form) -> Result<Bytes, Problem> {
    form.file("file")
        .map(|f| f.data.clone())
        .ok_or_else(|| Problem::bad_request("the `file` part is required"))
}
