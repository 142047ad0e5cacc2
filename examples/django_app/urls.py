"""Views of the example: an open home page and a members page."""

from django.contrib.auth.decorators import login_not_required, login_required
from django.http import HttpRequest, JsonResponse
from django.urls import path


@login_not_required
def home(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


@login_required
def members(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "username": request.user.get_username(),
            "email": request.user.email,
            "aal": request.ory_session["authenticator_assurance_level"],
        }
    )


def reports(request: HttpRequest) -> JsonResponse:  # LoginRequiredMiddleware guards it
    return JsonResponse({"reports": []})


urlpatterns = [
    path("", home),
    path("members/", members),
    path("reports/", reports),
]
