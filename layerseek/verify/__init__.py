"""Geometric verification: local features per image, correspondences between a query and a
shortlisted image, and RANSAC counting those consistent with one transformation.

    features.py   SIFT -> RootSIFT keypoints and descriptors (OpenCV), packed compactly per image
    geometry.py   matching (ratio test), RANSAC inliers (USAC MAGSAC homography), re-ranking a shortlist
"""
