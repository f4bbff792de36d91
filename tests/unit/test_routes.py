from otel_velocity.routes import (
    MAX_ROUTE_LENGTH,
    OTHER_METHOD,
    UNMATCHED_ROUTE,
    RouteKey,
    is_server_error,
    response_status_code,
    route_key,
)


def test_route_key_stable_attributes() -> None:
    key = route_key({"http.request.method": "GET", "http.route": "/items/{item_id}"})
    assert key == RouteKey("GET", "/items/{item_id}")
    assert str(key) == "GET /items/{item_id}"


def test_route_key_old_attributes() -> None:
    key = route_key({"http.method": "post", "http.route": "/cart/{cart_id}"})
    assert key == RouteKey("POST", "/cart/{cart_id}")


def test_route_key_prefers_stable_method() -> None:
    key = route_key({"http.request.method": "PUT", "http.method": "GET", "http.route": "/a"})
    assert key.method == "PUT"


def test_unrouted_paths_fold_into_one_row() -> None:
    keys = {
        route_key({"http.method": "GET", "http.target": f"/random/{n}", "http.url": f"/x/{n}"})
        for n in range(50)
    }
    assert keys == {RouteKey("GET", UNMATCHED_ROUTE)}


def test_unrouted_keeps_method_apart() -> None:
    get = route_key({"http.request.method": "GET", "url.path": "/nope"})
    post = route_key({"http.request.method": "POST", "url.path": "/nope"})
    assert get == RouteKey("GET", UNMATCHED_ROUTE)
    assert post == RouteKey("POST", UNMATCHED_ROUTE)


def test_unknown_method_becomes_other() -> None:
    assert route_key({"http.request.method": "BREW", "http.route": "/pot"}).method == OTHER_METHOD
    assert route_key({"http.route": "/pot"}).method == OTHER_METHOD
    assert route_key({"http.method": 7, "http.route": "/pot"}).method == OTHER_METHOD


def test_route_control_characters_and_length() -> None:
    key = route_key({"http.method": "GET", "http.route": "/a\nb\r\x00c"})
    assert key.route == "/a b  c"
    long_key = route_key({"http.method": "GET", "http.route": "/" + "x" * 500})
    assert len(long_key.route) == MAX_ROUTE_LENGTH


def test_route_of_wrong_type_is_unmatched() -> None:
    assert route_key({"http.method": "GET", "http.route": 12}).route == UNMATCHED_ROUTE
    assert route_key({"http.method": "GET", "http.route": "   "}).route == UNMATCHED_ROUTE


def test_status_code_both_generations() -> None:
    assert response_status_code({"http.response.status_code": 503}) == 503
    assert response_status_code({"http.status_code": 404}) == 404
    assert response_status_code({"http.status_code": "500"}) == 500


def test_status_code_invalid_values() -> None:
    assert response_status_code({}) is None
    assert response_status_code({"http.status_code": True}) is None
    assert response_status_code({"http.status_code": 42}) is None
    assert response_status_code({"http.status_code": "5xx"}) is None
    assert response_status_code({"http.status_code": 5.0}) is None


def test_server_error_rule() -> None:
    assert is_server_error(500, False)
    assert is_server_error(503, False)
    assert not is_server_error(404, True)
    assert not is_server_error(418, False)
    assert is_server_error(None, True)
    assert not is_server_error(None, False)


def test_route_key_parse() -> None:
    assert RouteKey.parse("GET /items/{item_id}") == RouteKey("GET", "/items/{item_id}")
    assert RouteKey.parse("GET /search me") == RouteKey("GET", "/search me")


def test_route_key_parse_rejects_bad_text() -> None:
    for text in ("GET", "", " /a", "GET "):
        try:
            RouteKey.parse(text)
        except ValueError as error:
            assert repr(text) in str(error)
        else:
            raise AssertionError(f"{text!r} parsed")
