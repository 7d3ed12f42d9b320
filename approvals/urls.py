from django.urls import path

from .views import posts, reviews, sandbox
from .views.preferences import notification_preferences

urlpatterns = [
    path("", posts.home, name="home"),
    path("posts/new/", posts.post_create, name="post_create"),
    path("posts/preview/", posts.preview, name="post_preview"),
    path("posts/<int:pk>/", posts.post_detail, name="post_detail"),
    path("posts/<int:pk>/edit/", posts.post_edit, name="post_edit"),
    path(
        "posts/<int:pk>/revisions/<int:number>/image/",
        posts.revision_image,
        name="revision_image",
    ),
    path("posts/kept-image/<str:token>/", posts.kept_image, name="kept_image"),
    path("posts/<int:pk>/submit/", posts.post_submit, name="post_submit"),
    path("posts/<int:pk>/withdraw/", posts.post_withdraw, name="post_withdraw"),
    path("posts/<int:pk>/retry/", posts.post_retry, name="post_retry"),
    path("posts/<int:pk>/retract/", posts.post_retract, name="post_retract"),
    path("posts/<int:pk>/decide/", posts.post_decide, name="post_decide"),
    path("posts/<int:pk>/claim/", posts.post_claim, name="post_claim"),
    path("posts/<int:pk>/release-claim/", posts.post_release_claim, name="post_release_claim"),
    path("review/", reviews.review_queue_view, name="review_queue"),
    path("settings/notifications/", notification_preferences, name="notification_preferences"),
    path("sandbox/", sandbox.sandbox_index, name="sandbox_index"),
    path("sandbox/<int:account_id>/", sandbox.sandbox_feed, name="sandbox_feed"),
]
