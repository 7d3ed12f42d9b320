from django.urls import path

from .views import posts, sandbox

urlpatterns = [
    path("", posts.home, name="home"),
    path("posts/new/", posts.post_create, name="post_create"),
    path("posts/preview/", posts.preview, name="post_preview"),
    path("posts/<int:pk>/", posts.post_detail, name="post_detail"),
    path("posts/<int:pk>/edit/", posts.post_edit, name="post_edit"),
    path("posts/<int:pk>/submit/", posts.post_submit, name="post_submit"),
    path("posts/<int:pk>/withdraw/", posts.post_withdraw, name="post_withdraw"),
    path("posts/<int:pk>/retry/", posts.post_retry, name="post_retry"),
    path("posts/<int:pk>/decide/", posts.post_decide, name="post_decide"),
    path("review/", posts.review_queue_view, name="review_queue"),
    path("sandbox/", sandbox.sandbox_index, name="sandbox_index"),
    path("sandbox/<int:account_id>/", sandbox.sandbox_feed, name="sandbox_feed"),
]
