"""Settings of the example: Django's minimum, plus the Ory lines."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
USE_TZ = True
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "ory_wsgi.django.OryMiddleware",  # Ory: the session's user becomes request.user
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
]

# Ory
AUTHENTICATION_BACKENDS = ["ory_wsgi.django.OryBackend"]
ORY_SDK_URL = os.environ.get("ORY_SDK_URL", "http://127.0.0.1:4433")
ORY_PUBLIC_URL = os.environ.get("APP_URL", "http://127.0.0.1:8000")
LOGIN_URL = "/.ory/proxy/login"
