"""Texts of the sign-in pages in English and Chinese, and the choice of language for a request.

The language comes from the OIDC ``ui_locales`` authorize parameter (the web apps pass their current language),
else from the browser's Accept-Language header; English when neither names a language we have.
"""

from __future__ import annotations

LANGS = ("en", "zh")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Sign in · Dataspace",
        "heading": "Sign in to continue",
        "asks": "asks to access your data space account.",
        "scopes": "Access requested:",
        "sep": ", ",
        "reauth": "Please confirm it is you: this action needs a recent sign-in.",
        "username": "User name",
        "password": "Password",
        "approve": "Sign in and allow",
        "deny": "Deny",
        "switch": "中文",
        "switch_label": "切换到中文",
        "expired": "This sign-in form has expired. Please sign in again.",
        "limited": "Too many failed sign-ins from here. Wait a little and try again.",
        "invalid": "Wrong user name or password.",
        "wrong_app": "This account cannot sign in to this application.",
        "error_title": "Sign-in request rejected · Dataspace",
        "error_heading": "This sign-in request cannot be processed",
        "error_return": "Return to the application and try again.",
    },
    "zh": {
        "title": "登录 · 数据空间",
        "heading": "登录以继续",
        "asks": "请求访问您的数据空间账户。",
        "scopes": "请求的权限：",
        "sep": "、",
        "reauth": "请确认是您本人：此操作需要最近登录。",
        "username": "用户名",
        "password": "密码",
        "approve": "登录并允许",
        "deny": "拒绝",
        "switch": "English",
        "switch_label": "Switch to English",
        "expired": "此登录表单已过期，请重新登录。",
        "limited": "此处登录失败次数过多，请稍后再试。",
        "invalid": "用户名或密码错误。",
        "wrong_app": "此账户不能登录此应用。",
        "error_title": "登录请求被拒绝 · 数据空间",
        "error_heading": "无法处理此登录请求",
        "error_return": "请返回应用后重试。",
    },
}

# Chinese names of the built-in clients (auth.web_clients) and of the scopes; other clients keep their name.
CLIENT_NAMES: dict[str, dict[str, str]] = {
    "zh": {
        "portal": "我的数据",
        "console": "合规控制台",
        "partner-view": "合作伙伴视图",
        "steward-console": "数据管理员控制台",
        "steward-cli": "数据管理员命令行",
        "compliance-cli": "合规命令行",
        "customer-cli": "客户命令行",
    },
}
SCOPE_NAMES: dict[str, dict[str, str]] = {
    "zh": {
        "catalog": "数据说明书",
        "consents": "授权",
        "usage": "数据使用记录",
        "points": "积分",
        "redeem": "兑换积分",
        "erase": "删除账户",
        "partner": "合作伙伴业务",
        "audit": "审计",
        "admin": "数据管理",
        "policy": "访问策略",
    },
}


def client_name(lang: str, client_id: str, name: str) -> str:
    return CLIENT_NAMES.get(lang, {}).get(client_id, name)


def scope_names(lang: str, scopes: list[str]) -> list[str]:
    names = SCOPE_NAMES.get(lang, {})
    return [names.get(scope, scope) for scope in scopes]


def _primary(tag: str) -> str | None:
    code = tag.strip().split(";")[0].strip().lower().split("-")[0]
    return code if code in LANGS else None


def choose_lang(ui_locales: str | None, accept_language: str | None) -> str:
    """``ui_locales`` (space-separated, in order of preference) wins; then Accept-Language by its q-values."""
    for tag in (ui_locales or "").split():
        if code := _primary(tag):
            return code
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        pieces = part.split(";")
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        code = _primary(pieces[0])
        if code and quality > 0:
            ranked.append((-quality, index, code))
    return sorted(ranked)[0][2] if ranked else "en"
