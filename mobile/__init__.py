"""The phone doors of gridflow, served by the API itself: the grid worker's app (掌上巡检,
`/m/`) and the residents' QR-code page (码上说, `/r/`). Every asset is served from this
package (no CDN, no external fonts or maps); scripts live in files (CSP without inline code).
"""
