//! `[[services]]`: the services of a release, one image each, exactly one the sentinel.

use toml::Spanned;

use super::Service;
use super::field::{Invalid, nonempty};
use super::raw::RawService;

/// An error unless the file lists a service.
pub(super) fn present(services: &[Spanned<RawService>]) -> Result<(), Invalid> {
    if services.is_empty() {
        return Err((
            0..0,
            "no [[services]]: add at least one with name and repository".into(),
        ));
    }
    Ok(())
}

/// The services, in file order, exactly one of them the sentinel (the image CI pushes last,
/// whose tag says a release is complete).
pub(super) fn validate(services: &[Spanned<RawService>]) -> Result<Vec<Service>, Invalid> {
    let valid = services
        .iter()
        .map(|s| {
            let r = s.get_ref();
            Ok(Service {
                name: nonempty(&r.name, "service name")?,
                repository: nonempty(&r.repository, "service repository")?,
                sentinel: r.sentinel,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    let sentinels: Vec<_> = services.iter().filter(|s| s.get_ref().sentinel).collect();
    match sentinels.as_slice() {
        [_] => Ok(valid),
        [] => Err((
            services[0].span(),
            "no service has `sentinel = true`; mark exactly one (the image CI pushes last)".into(),
        )),
        [_, second, ..] => Err((
            second.span(),
            "more than one service has `sentinel = true`; keep exactly one".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::check;

    #[test]
    fn errors() {
        check(
            "sentinel = true",
            "sentinel = false",
            "no service has `sentinel = true`",
        );
        check(
            "repository = \"api\"",
            "repository = \"api\"\nsentinel = true",
            "more than one service",
        );
        check(
            "name = \"api\"",
            "name = \"logserver\"",
            "service \"logserver\" is defined twice",
        );
    }
}
